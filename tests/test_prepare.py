"""Tests for satgan.prepare: memory-mapped arrays, sidecars, seeded holdout, bounded memory."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from satgan import imageops as ops
from satgan.arrays import open_prepared
from satgan.errors import DataError, ParamsError
from satgan.params import from_mapping, load_section
from satgan.prepare import PrepareParams, prepare
from satgan.split import box_gaps
from satgan.validate import ValidateParams, validate

# Tests of other behaviours run on a few dozen tiles, under prepare's minimum dataset size.
FEW = (1, 1)


@pytest.fixture(scope="module")
def params(repo_root) -> PrepareParams:
    """The repository's prepare params at the smallest size, so tests stay fast; a 10% holdout and no validation
    split, as the figures below assume (tests that need a validation split turn it on)."""
    base = load_section("prepare", PrepareParams, repo_root / "params.yaml")
    return dataclasses.replace(base, image_size=32, chunk_size=16, holdout_fraction=0.1, validation_fraction=0.0)


def write_accepted(raw: Path, validated: Path, names: list[str], channels: int = 3) -> None:
    """accepted.csv as validate writes it, for files already under raw/tiles."""
    lines = ["path,sha256,width,height,mode,channels,action"]
    for name in names:
        path = raw / "tiles" / name
        with Image.open(path) as im:
            w, h, mode = im.width, im.height, im.mode
        lines.append(f"tiles/{name},{hashlib.sha256(path.read_bytes()).hexdigest()},{w},{h},{mode},{channels},as_is")
    validated.mkdir(parents=True, exist_ok=True)
    (validated / "accepted.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def real_crops(tmp_path_factory, rsscn7_files) -> tuple[Path, Path, list[str]]:
    """40 real 100x80 crops of RSSCN7 tiles as PNGs in raw/tiles, with accepted.csv."""
    root = tmp_path_factory.mktemp("crops")
    (root / "raw" / "tiles").mkdir(parents=True)
    names = []
    for k, src in enumerate(rsscn7_files[::7][:40]):
        with Image.open(src) as im:
            im.crop((0, 0, 100, 80)).save(root / "raw" / "tiles" / f"t{k:03d}.png")
        names.append(f"t{k:03d}.png")
    write_accepted(root / "raw", root / "validated", names)
    return root / "raw", root / "validated", names


def run(real_crops, tmp_path, params):
    raw, validated, _ = real_crops
    return prepare(raw, validated, tmp_path / "prepared", params, progress=False, min_tiles=FEW)


def test_outputs_open_memmapped_and_via_contract(real_crops, tmp_path, params):
    """tiles.npy/holdout.npy open with np.load(mmap_mode='r') and satgan.arrays.open_prepared."""
    result = run(real_crops, tmp_path, params)
    for name, n in (("tiles", result.train), ("holdout", result.holdout)):
        plain = np.load(tmp_path / "prepared" / f"{name}.npy", mmap_mode="r")
        arr, meta = open_prepared(tmp_path / "prepared" / f"{name}.npy")
        assert isinstance(plain, np.memmap) and arr.shape == (n, 3, 32, 32) and arr.dtype == np.float16
        assert -1 <= arr.min() and arr.max() <= 1 and meta["count"] == n and meta["value_range"] == [-1.0, 1.0]
    assert result.train + result.holdout == 40


def test_float32_dtype(real_crops, tmp_path, params):
    """prepare.dtype float32 writes float32 arrays and says so in the sidecar."""
    run(real_crops, tmp_path, dataclasses.replace(params, dtype="float32"))
    arr, meta = open_prepared(tmp_path / "prepared" / "tiles.npy")
    assert arr.dtype == np.float32 and meta["dtype"] == "float32"


def test_tiles_equal_the_shared_imageops_pipeline(real_crops, tmp_path, params):
    """Each stored tile is normalize(resize_center_crop(decode_pixels(file))) in row order."""
    raw, _, names = real_crops
    run(real_crops, tmp_path, dataclasses.replace(params, dtype="float32"))
    arr, meta = open_prepared(tmp_path / "prepared" / "tiles.npy")
    for k in (0, len(arr) - 1):
        pixels = ops.decode_pixels((raw / meta["sources"][k]).read_bytes(), 3)
        assert np.array_equal(arr[k], ops.normalize(ops.resize_center_crop(pixels, 32)))


def test_holdout_is_seeded_disjoint_and_recorded(real_crops, tmp_path, params):
    """The split is the same for the same seed, disjoint, complete, and listed in both sidecars."""
    run(real_crops, tmp_path / "a", params)
    run(real_crops, tmp_path / "b", params)
    run(real_crops, tmp_path / "c", dataclasses.replace(params, seed=params.seed + 1))
    side = {k: {n: json.loads((tmp_path / k / "prepared" / f"{n}.json").read_text()) for n in ("tiles", "holdout")}
            for k in "abc"}
    train, hold = set(side["a"]["tiles"]["sources"]), set(side["a"]["holdout"]["sources"])
    assert not train & hold and len(train | hold) == 40 == side["a"]["tiles"]["total"]
    assert side["a"]["holdout"]["rows"] == side["b"]["holdout"]["rows"] != side["c"]["holdout"]["rows"]
    assert side["a"]["holdout"]["count"] == round(40 * params.holdout_fraction)
    accepted_sha = hashlib.sha256((real_crops[1] / "accepted.csv").read_bytes()).hexdigest()
    assert side["a"]["tiles"]["accepted_csv_sha256"] == accepted_sha


def test_output_independent_of_chunk_size_and_workers(real_crops, tmp_path, params):
    """chunk_size and workers change speed and memory only, never the bytes written."""
    run(real_crops, tmp_path / "a", dataclasses.replace(params, chunk_size=1, workers=1))
    run(real_crops, tmp_path / "b", dataclasses.replace(params, chunk_size=64, workers=3))
    for name in ("tiles.npy", "holdout.npy"):
        assert (tmp_path / "a" / "prepared" / name).read_bytes() == (tmp_path / "b" / "prepared" / name).read_bytes()


def test_streamed_mean_std_match_the_array(real_crops, tmp_path, params):
    """The per-channel mean/std in the sidecar equal those of the stored array."""
    run(real_crops, tmp_path, params)
    arr, meta = open_prepared(tmp_path / "prepared" / "tiles.npy")
    data = np.asarray(arr, np.float64)
    assert np.allclose(meta["mean"], data.mean(axis=(0, 2, 3)), atol=1e-5)
    assert np.allclose(meta["std"], data.std(axis=(0, 2, 3)), atol=1e-5)


def test_one_channel_keep_path(tmp_path, repo_root, odd_dir, rsscn7_files, params):
    """validate with grayscale=keep, then prepare, gives (N, 1, H, W) arrays of real gray + colour tiles."""
    raw = tmp_path / "raw"
    (raw / "tiles").mkdir(parents=True)
    files = [odd_dir / f"landsat8_pan_{i}_{kind}" for i in range(3) for kind in ("u16.tif", "gray.png")]
    lines = ["path,source,sha256,bytes,status,error"]
    for src in files + rsscn7_files[:4]:
        (raw / "tiles" / src.name).write_bytes(src.read_bytes())
        lines.append(f"tiles/{src.name},test,,0,ok,")
    (raw / "manifest.csv").write_text("\n".join(lines) + "\n")
    vparams = load_section("validate", ValidateParams, repo_root / "params.yaml")
    validate(raw, tmp_path / "validated", dataclasses.replace(vparams, grayscale="keep"), progress=False)
    result = prepare(raw, tmp_path / "validated", tmp_path / "prepared", params, progress=False, min_tiles=FEW)
    arr, meta = open_prepared(tmp_path / "prepared" / "tiles.npy")
    assert arr.shape[1] == meta["channels"] == 1 and result.train + result.holdout == 10


def test_peak_memory_does_not_grow_with_tile_count(tmp_path, params):
    """Peak traced memory for 2,000 tiles is within a few MB of 200 (pixels are never all held)."""
    tile = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    raw = tmp_path / "raw"
    (raw / "tiles").mkdir(parents=True)
    names = [f"{i:05d}.png" for i in range(2000)]
    tile.save(raw / "tiles" / names[0])
    for name in names[1:]:  # the same bytes: prepare does not dedupe (validate did), so this is fine
        (raw / "tiles" / name).write_bytes((raw / "tiles" / names[0]).read_bytes())
    peaks = {}
    small = dataclasses.replace(params, image_size=64, chunk_size=32, dtype="float32")
    for n in (50, 200, 2000):  # the 50-tile run is a warm-up: first use imports albumentations
        write_accepted(raw, tmp_path / f"v{n}", names[:n])
        tracemalloc.start()
        prepare(raw, tmp_path / f"v{n}", tmp_path / f"p{n}", small, progress=False, min_tiles=FEW)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    held_pixels = 1800 * 3 * 64 * 64 * 4  # what holding the extra tiles in memory would cost (~88 MB)
    assert peaks[2000] - peaks[200] < 4_000_000 < held_pixels // 20, peaks


def test_changed_raw_file_is_a_data_error_and_leaves_no_temp(real_crops, tmp_path, params):
    """A raw file that changed after validate stops prepare; no partial or temp file is left."""
    raw, validated, names = real_crops
    copy = tmp_path / "raw"
    (copy / "tiles").mkdir(parents=True)
    for name in names:
        (copy / "tiles" / name).write_bytes((raw / "tiles" / name).read_bytes())
    (copy / "tiles" / names[-1]).write_bytes(b"changed")
    with pytest.raises(DataError, match="changed since validate"):
        prepare(copy, validated, tmp_path / "prepared", params, progress=False, min_tiles=FEW)
    assert not [p for p in (tmp_path / "prepared").iterdir() if p.name.startswith(".") or "tiles" in p.name]


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_disk_too_full_for_the_arrays_is_one_line_and_keeps_the_previous_dataset(real_crops, tmp_path, params):
    """A disk that cannot hold tiles.npy (its blocks are reserved before any row is mapped and written, so this is
    ENOSPC, not SIGBUS) stops prepare with one line naming the file; no temp file is left, the previous dataset stays."""
    run(real_crops, tmp_path, params)
    out = tmp_path / "prepared"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "posix_fallocate", _no_space)
        with pytest.raises(DataError, match=r"tiles\.npy: cannot reserve [\d.]+ MB on disk .*No space left on device"):
            run(real_crops, tmp_path, params)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_full_disk_while_writing_the_small_files_is_one_line(real_crops, tmp_path, params, monkeypatch):
    """ENOSPC from a plain write (the preview grid) is one DataError line naming the output folder; no temp file is left."""
    monkeypatch.setattr(ops, "save_grid", _no_space)
    with pytest.raises(DataError, match="prepared: cannot write the prepared dataset .No space left on device.; the previous"):
        run(real_crops, tmp_path, params)
    assert list((tmp_path / "prepared").iterdir()) == []


def test_mixed_channel_counts_are_refused(real_crops, tmp_path, params):
    """accepted.csv rows that disagree on channels are a DataError naming the file."""
    raw, validated, _ = real_crops
    text = (validated / "accepted.csv").read_text().replace(",3,as_is", ",1,as_is", 1)
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "accepted.csv").write_text(text)
    with pytest.raises(DataError, match=r"accepted.csv: expected one channel count"):
        prepare(raw, tmp_path / "v", tmp_path / "prepared", params, progress=False, min_tiles=FEW)


def test_bad_holdout_fraction_names_the_key():
    """holdout_fraction outside (0, 0.5] is refused naming prepare.holdout_fraction."""
    good = {"image_size": 32, "dtype": "float16", "holdout_fraction": 0.1, "seed": 0, "chunk_size": 8, "workers": 1,
            "holdout_split": "auto", "holdout_margin_px": 0, "holdout_blocks": 4, "validation_fraction": 0.0}
    with pytest.raises(ParamsError, match=r"prepare\.holdout_fraction: expected a fraction in \(0, 0\.5\]"):
        from_mapping(PrepareParams, good | {"holdout_fraction": 0.0}, "prepare")


def test_stage_reads_only_the_prepare_section(real_crops, tmp_path, repo_root):
    """stages/prepare.py runs with a params file holding nothing but a prepare section."""
    raw, validated, _ = real_crops
    (tmp_path / "params.yaml").write_text(
        "prepare:\n  image_size: 32\n  dtype: float16\n  holdout_fraction: 0.2\n  seed: 3\n  chunk_size: 8\n  workers: 2\n"
        "  holdout_split: auto\n  holdout_margin_px: 0\n  holdout_blocks: 4\n  validation_fraction: 0.0\n")
    proc = subprocess.run([sys.executable, str(repo_root / "stages" / "prepare.py"), "--raw", str(raw),
                           "--validated", str(validated), "--out", str(tmp_path / "out"),
                           "--params", str(tmp_path / "params.yaml")],
                          cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "prepare: 32 training + 8 holdout tiles of 3x32x32 float16" in proc.stdout
    assert (tmp_path / "out" / "preview.png").is_file()


def copy_raw(raw: Path, dest: Path, names: list[str]) -> Path:
    """A private copy of raw/tiles, so a test may delete or replace files."""
    (dest / "tiles").mkdir(parents=True)
    for name in names:
        (dest / "tiles" / name).write_bytes((raw / "tiles" / name).read_bytes())
    return dest


def test_vanished_tile_is_one_error_line_and_keeps_the_previous_output(real_crops, tmp_path, params):
    """An accepted tile deleted after validate: one DataError naming it; the previous five outputs stay byte-identical."""
    raw, validated, names = real_crops
    copy = copy_raw(raw, tmp_path / "raw", names)
    out = tmp_path / "prepared"
    prepare(copy, validated, out, params, progress=False, min_tiles=FEW)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (copy / "tiles" / names[-1]).unlink()
    with pytest.raises(DataError) as info:
        prepare(copy, validated, out, dataclasses.replace(params, image_size=64), progress=False, min_tiles=FEW)
    message = str(info.value)
    assert message.startswith(str(copy / "tiles" / names[-1])) and "no longer exists" in message and "\n" not in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and len(before) == 5


@pytest.mark.parametrize("bad", ["/etc/hostname", "../outside.png", "tiles/../../outside.png", "tiles/link.png"])
def test_accepted_paths_outside_raw_are_refused(real_crops, tmp_path, params, bad):
    """An absolute, '..' or symlinked accepted.csv path stops prepare naming the line; the outside file is never read."""
    raw, validated, names = real_crops
    copy = copy_raw(raw, tmp_path / "raw", names)
    (tmp_path / "outside.png").write_bytes((raw / "tiles" / names[0]).read_bytes())
    (copy / "tiles" / "link.png").symlink_to(tmp_path / "outside.png")
    text = (validated / "accepted.csv").read_text().replace(f"tiles/{names[3]},", f"{bad},", 1)
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "accepted.csv").write_text(text)
    with pytest.raises(DataError, match=r"accepted\.csv: line 5: .*prepare reads only files inside"):
        prepare(copy, tmp_path / "v", tmp_path / "prepared", params, progress=False, min_tiles=FEW)
    assert not (tmp_path / "prepared").exists()


def test_malformed_accepted_row_is_one_error_line(real_crops, tmp_path, params):
    """A row with a non-numeric width is a DataError naming accepted.csv and the line, not a ValueError."""
    raw, validated, _ = real_crops
    lines = (validated / "accepted.csv").read_text().splitlines()
    cells = lines[2].split(",")
    cells[2] = "wide"
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "accepted.csv").write_text("\n".join(lines[:2] + [",".join(cells)] + lines[3:]) + "\n")
    with pytest.raises(DataError, match=r"accepted\.csv: line 3: malformed row"):
        prepare(raw, tmp_path / "v", tmp_path / "prepared", params, progress=False, min_tiles=FEW)


def test_too_few_held_out_tiles_stop_before_writing(real_crops, tmp_path, params):
    """40 tiles at holdout_fraction 0.1 leave 4 held out: prepare stops naming the counts and the params, writing nothing."""
    raw, validated, _ = real_crops
    with pytest.raises(DataError, match=r"40 accepted -> 36 training and 4 held out .*need at least 32 training tiles "
                                        r".* and 6 held-out tiles.*prepare\.holdout_fraction"):
        prepare(raw, validated, tmp_path / "prepared", params, progress=False)
    assert not (tmp_path / "prepared").exists() or not any((tmp_path / "prepared").iterdir())


def test_too_few_training_tiles_stop_the_stage_with_one_line(real_crops, tmp_path, repo_root):
    """stages/prepare.py on 40 tiles with half held out exits 2 with one error line naming the minimum."""
    raw, validated, _ = real_crops
    (tmp_path / "params.yaml").write_text(
        "prepare:\n  image_size: 32\n  dtype: float16\n  holdout_fraction: 0.5\n  seed: 3\n  chunk_size: 8\n  workers: 1\n"
        "  holdout_split: auto\n  holdout_margin_px: 0\n  holdout_blocks: 4\n  validation_fraction: 0.0\n")
    proc = subprocess.run([sys.executable, str(repo_root / "stages" / "prepare.py"), "--raw", str(raw),
                           "--validated", str(validated), "--out", str(tmp_path / "out"),
                           "--params", str(tmp_path / "params.yaml")],
                          cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("prepare: error: too few tiles to train and evaluate: "
                                                                    "40 accepted -> 20 training and 20 held out")
    assert not (tmp_path / "out" / "tiles.npy").exists()


def test_sidecars_carry_the_provenance_block(real_crops, tmp_path, params):
    """Both sidecars hold the same provenance block, here for tiles download's manifest does not list."""
    run(real_crops, tmp_path, params)
    side = [json.loads((tmp_path / "prepared" / f"{n}.json").read_text()) for n in ("tiles", "holdout")]
    assert side[0]["provenance"] == side[1]["provenance"]
    assert side[0]["provenance"]["source"] == "unknown" and side[0]["provenance"]["tiles"] == 40


@pytest.fixture(scope="module")
def labelled_crops(tmp_path_factory, rsscn7_files) -> tuple[Path, Path, dict[str, str]]:
    """18 real 100x80 crops, 6 from each of 3 rsscn7 classes, with accepted.csv carrying each tile's class folder."""
    root = tmp_path_factory.mktemp("labelled")
    (root / "raw" / "tiles").mkdir(parents=True)
    labels = {}
    for c in range(3):
        for k, src in enumerate(rsscn7_files[40 * c:40 * c + 6]):
            name = f"{src.parent.name}_{k}.png"
            with Image.open(src) as im:
                im.crop((0, 0, 100, 80)).save(root / "raw" / "tiles" / name)
            labels[name] = src.parent.name
    write_accepted(root / "raw", root / "validated", list(labels))
    csv_path = root / "validated" / "accepted.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([lines[0] + ",label"] + [f"{line},{labels[line.split(',')[0][6:]]}"
                                                            for line in lines[1:]]) + "\n")
    return root / "raw", root / "validated", labels


def test_labels_npy_are_int64_and_aligned_with_the_tiles(labelled_crops, tmp_path, params):
    """labels.npy / holdout_labels.npy hold each row's class index (int64) into the sidecars' sorted classes."""
    raw, validated, labels = labelled_crops
    prepare(raw, validated, tmp_path / "p", params, progress=False, min_tiles=FEW)
    for npy, lab in (("tiles", "labels.npy"), ("holdout", "holdout_labels.npy")):
        side = json.loads((tmp_path / "p" / f"{npy}.json").read_text())
        got = np.load(tmp_path / "p" / lab, allow_pickle=False)
        assert got.dtype == np.int64 and got.shape == (side["count"],) == (len(side["sources"]),)
        assert side["classes"] == ["aGrass", "bField", "cIndustry"]
        assert [side["classes"][i] for i in got] == [labels[s[6:]] for s in side["sources"]]


def test_random_holdout_is_stratified_by_class(labelled_crops, tmp_path, params):
    """Every class holds out the same share of its own tiles (here 1 or 2 of 6), recorded per class in the sidecars."""
    raw, validated, _ = labelled_crops
    prepare(raw, validated, tmp_path / "p", dataclasses.replace(params, holdout_fraction=0.3), progress=False,
            min_tiles=FEW)
    hold = json.loads((tmp_path / "p" / "holdout.json").read_text())
    train = json.loads((tmp_path / "p" / "tiles.json").read_text())
    assert hold["class_counts"] == {"aGrass": 2, "bField": 2, "cIndustry": 2}
    assert train["class_counts"] == {"aGrass": 4, "bField": 4, "cIndustry": 4}
    assert hold["holdout_split"]["reason"].endswith("stratified by class")


def test_a_class_too_small_for_both_splits_is_one_error_line(labelled_crops, tmp_path, params):
    """A class with a single tile stops prepare with one line naming the class and its count."""
    raw, validated, _ = labelled_crops
    lines = (validated / "accepted.csv").read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",lonely"
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "accepted.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"^class 'lonely' has 1 tile\(s\): too few for both a training and a "
                                        r"held-out tile \(prepare\.holdout_fraction 0\.1\)[^\n]*$"):
        prepare(raw, tmp_path / "v", tmp_path / "p", params, progress=False, min_tiles=FEW)


def test_unlabelled_data_writes_no_label_files(labelled_crops, real_crops, tmp_path, params):
    """Unlabelled data gets no labels files and no class keys; a stale labels.npy from a labelled run is removed."""
    raw, validated, _ = labelled_crops
    prepare(raw, validated, tmp_path / "p", params, progress=False, min_tiles=FEW)
    assert (tmp_path / "p" / "labels.npy").exists()
    raw, validated, _ = real_crops
    prepare(raw, validated, tmp_path / "p", params, progress=False, min_tiles=FEW)
    assert not (tmp_path / "p" / "labels.npy").exists() and not (tmp_path / "p" / "holdout_labels.npy").exists()
    assert "classes" not in json.loads((tmp_path / "p" / "tiles.json").read_text())


def test_class_folders_reach_labels_npy_through_download_and_validate(tmp_path, repo_root, rsscn7_files, params):
    """rsscn7 class folders -> download (labels: folder) -> validate -> prepare: each tile's folder is its class."""
    from satgan.download import DownloadParams, run_download

    src = tmp_path / "src"
    for c in range(3):
        for f in rsscn7_files[40 * c:40 * c + 4]:
            (src / f.parent.name).mkdir(parents=True, exist_ok=True)
            (src / f.parent.name / f.name).write_bytes(f.read_bytes())
    doc = load_section("download", DownloadParams, repo_root / "params.yaml")
    run_download(dataclasses.replace(doc, source="folder", labels="folder",
                                     folder=dataclasses.replace(doc.folder, path=str(src))), tmp_path / "raw")
    vparams = dataclasses.replace(load_section("validate", ValidateParams, repo_root / "params.yaml"), workers=1)
    validate(tmp_path / "raw", tmp_path / "validated", vparams, progress=False)
    prepare(tmp_path / "raw", tmp_path / "validated", tmp_path / "p", dataclasses.replace(params, holdout_fraction=0.25),
            progress=False, min_tiles=FEW)
    side = json.loads((tmp_path / "p" / "holdout.json").read_text())
    got = np.load(tmp_path / "p" / "holdout_labels.npy")
    assert side["classes"] == ["aGrass", "bField", "cIndustry"]
    assert [side["classes"][i] for i in got] == [s.split("/")[1] for s in side["sources"]]
    assert sorted(got.tolist()) == [0, 1, 2]


def test_validation_split_is_written_stratified_and_apart_from_the_holdout(labelled_crops, tmp_path, params):
    """validation_fraction > 0: validation.npy, its sidecar and labels; each class gives its share, no tile twice."""
    raw, validated, labels = labelled_crops
    result = prepare(raw, validated, tmp_path / "p", dataclasses.replace(params, validation_fraction=0.3),
                     progress=False, min_tiles=FEW)
    arr, side = open_prepared(tmp_path / "p" / "validation.npy")
    got = np.load(tmp_path / "p" / "validation_labels.npy", allow_pickle=False)
    assert arr.shape[0] == result.validation == side["count"] == 6 and side["split"] == "validation"
    assert side["class_counts"] == {"aGrass": 2, "bField": 2, "cIndustry": 2}
    assert [side["classes"][i] for i in got] == [labels[s[6:]] for s in side["sources"]]
    others = {s for n in ("tiles", "holdout") for s in json.loads((tmp_path / "p" / f"{n}.json").read_text())["sources"]}
    assert not set(side["sources"]) & others and side["holdout_split"]["validation"] == 6


def test_no_validation_split_removes_a_stale_one(real_crops, tmp_path, params):
    """validation_fraction 0 after a run with one: validation.npy, .json (and labels) from that run are removed."""
    run(real_crops, tmp_path, dataclasses.replace(params, validation_fraction=0.2))
    assert (tmp_path / "prepared" / "validation.npy").is_file()
    run(real_crops, tmp_path, params)
    assert not any((tmp_path / "prepared" / n).exists() for n in ("validation.npy", "validation.json"))


def test_positionless_tiles_get_no_boxes(real_crops, tmp_path, params):
    """Tiles download's manifest does not place (here: no manifest) give sidecars without boxes."""
    run(real_crops, tmp_path, params)
    assert all("boxes" not in json.loads((tmp_path / "prepared" / f"{n}.json").read_text()) for n in ("tiles", "holdout"))


@pytest.fixture(scope="module")
def sample_region(tmp_path_factory, repo_root) -> tuple[Path, Path]:
    """The default sample source's windows (download.sample tile_size and stride) over a 640 x 640 px corner of the
    real Sentinel-2 scene, as download writes them (PNGs + manifest sources), validated with the default params."""
    from satgan.download import DownloadParams
    from satgan.download.sources import load_sample_rgb, sample_origins, sample_tile

    root = tmp_path_factory.mktemp("region")
    sample = load_section("download", DownloadParams, repo_root / "params.yaml").sample
    rgb = load_sample_rgb(sample)[:640, :640]
    size = sample.tile_size
    rows = ["path,source,sha256,bytes,status,error"]
    for r, c in sample_origins(640, 640, size, sample.stride):
        rel, source = sample_tile(r, c, size)
        (root / "raw" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb[r:r + size, c:c + size]).save(root / "raw" / rel)
        rows.append(f'{rel},"{source}",{hashlib.sha256((root / "raw" / rel).read_bytes()).hexdigest()},1,ok,')
    (root / "raw" / "manifest.csv").write_text("\n".join(rows) + "\n")
    vparams = dataclasses.replace(load_section("validate", ValidateParams, repo_root / "params.yaml"), workers=1)
    validate(root / "raw", root / "validated", vparams, progress=False)
    return root / "raw", root / "validated"


def test_default_sample_data_evaluates_on_tiles_that_share_no_pixels(sample_region, tmp_path, repo_root):
    """Default params on a real corner of the sample scene: held-out and validation boxes never intersect each other
    or a training box, and each set is its share of the pairwise-disjoint windows."""
    from satgan.arrays import sidecar_boxes

    raw, validated = sample_region
    params = dataclasses.replace(load_section("prepare", PrepareParams, repo_root / "params.yaml"), workers=1)
    result = prepare(raw, validated, tmp_path / "p", params, progress=False)
    box = {n: np.array([b[1:] for b in sidecar_boxes(open_prepared(tmp_path / "p" / f"{n}.npy")[1])])
           for n in ("tiles", "holdout", "validation")}
    rec = json.loads((tmp_path / "p" / "holdout.json").read_text())["holdout_split"]
    # 19 x 19 windows of 64 px every 32 px hold 10 x 10 pairwise-disjoint ones (fewer when validate rejects some)
    n = rec["independent"]
    assert 90 <= n <= 100 and result.holdout == round(n * params.holdout_fraction) == len(box["holdout"])
    assert result.validation == round(n * params.validation_fraction) == len(box["validation"])
    evaluation = np.concatenate([box["holdout"], box["validation"]])
    within = box_gaps(evaluation, evaluation)
    np.fill_diagonal(within, 0)
    assert within.min() >= 0 and box_gaps(box["tiles"], evaluation).min() >= 0
    assert len(box["tiles"]) == result.train >= 32

