"""Tests for satgan.validate: every ok manifest row ends accepted or rejected with a reason."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from satgan import imageops as ops
from satgan.errors import DataError, ParamsError
from satgan.fsutil import read_csv
from satgan.params import from_mapping, load_section
from satgan.validate import REASONS, ValidateParams, _Reject, inspect_bytes, validate


@pytest.fixture(scope="module")
def params(repo_root) -> ValidateParams:
    """The repository's own validate params (so params.yaml is exercised too)."""
    return load_section("validate", ValidateParams, repo_root / "params.yaml")


def noise(size=(64, 64), mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def encode(img: Image.Image, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def make_raw(root: Path, files: dict[str, bytes | Path], extra_rows=(), skip=()) -> Path:
    """A raw dir like the download stage's: tiles/<name> plus manifest.csv with status ok (no row for ``skip``)."""
    raw = root / "raw"
    (raw / "tiles").mkdir(parents=True)
    lines = ["path,source,sha256,bytes,status,error"]
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        (raw / "tiles" / name).write_bytes(data)
        if name in skip:
            continue
        lines.append(f"tiles/{name},test,{hashlib.sha256(data).hexdigest()},{len(data)},ok,")
    lines.extend(extra_rows)
    (raw / "manifest.csv").write_text("\n".join(lines) + "\n")
    return raw


def run(tmp_path, files, params, extra_rows=(), skip=()):
    raw = make_raw(tmp_path, files, extra_rows, skip)
    validate(raw, tmp_path / "out", params, progress=False)
    acc = {Path(r["path"]).name: r for r in read_csv(tmp_path / "out" / "accepted.csv")}
    rej = {Path(r["path"]).name: r for r in read_csv(tmp_path / "out" / "rejected.csv")}
    return acc, rej


def test_real_mix_counts_add_up(tmp_path, params, rsscn7_files, odd_dir):
    """Real RSSCN7 + odd files: every ok/resumed row is accepted or rejected exactly once; failed rows skipped."""
    files = {p.name: p for p in rsscn7_files[::40]} | {p.name: p for p in sorted(odd_dir.iterdir())}
    extra = ["tiles/gone.png,test,,0,failed,HTTP 404", "tiles/resumed.jpg,test,,0,resumed,"]
    acc, rej = run(tmp_path, files | {"resumed.jpg": rsscn7_files[1]}, params, extra_rows=extra, skip=["resumed.jpg"])
    files["resumed.jpg"] = rsscn7_files[1]
    assert set(acc) | set(rej) == set(files) and not set(acc) & set(rej)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["total"] == len(files) == report["accepted"] + report["rejected"]
    assert sum(report[f"rejected_{r}"] for r in REASONS) == report["rejected"]


def test_real_odd_files_get_their_reasons(tmp_path, params, odd_dir):
    """The 7-band TIFF is unsupported, the no-data corner is nodata, the full and cloudy tiles pass."""
    acc, rej = run(tmp_path, {p.name: p for p in odd_dir.iterdir()}, params)
    assert rej["landsat_7band_crop.tif"]["reason"] == "unsupported"
    assert "full-resolution pages" in rej["landsat_7band_crop.tif"]["detail"]
    assert rej["landsat7_nodata_corner.png"]["reason"] == "nodata"
    assert rej["landsat8_pan_0_u16.tif"]["reason"] == "grayscale"
    assert {"landsat7_full_tile.png", "landsat8_cloudy_truecolour.png"} <= set(acc)


@pytest.mark.parametrize("name,data,reason", [
    ("zero.png", b"", "empty"),
    ("text.png", b"this is not an image\n", "unreadable"),
    ("trunc.png", encode(noise((128, 128)))[:3000], "truncated"),
    ("corrupt.jpg", encode(noise(), "JPEG")[:200] + b"\x00" * 50, "truncated"),
])
def test_broken_files_are_rejected_not_raised(tmp_path, params, name, data, reason):
    """0-byte, text-as-.png, truncated and corrupt files become rejection rows."""
    acc, rej = run(tmp_path, {name: data, "good.png": encode(noise())}, params)
    assert rej[name]["reason"] == reason and "good.png" in acc


@pytest.mark.parametrize("mode,fmt", [("P", "PNG"), ("RGBA", "PNG"), ("CMYK", "TIFF"), ("YCbCr", "TIFF")])
def test_colour_modes_are_accepted_as_three_channels(tmp_path, params, mode, fmt):
    """Palette, RGBA, CMYK and YCbCr tiles are accepted, converted to 3 channels."""
    acc, _ = run(tmp_path, {f"t.{fmt.lower()}": encode(noise(mode=mode), fmt)}, params)
    assert acc[f"t.{fmt.lower()}"]["channels"] == "3" and acc[f"t.{fmt.lower()}"]["mode"] == mode


def test_sixteen_bit_and_la_follow_grayscale_policy(tmp_path, params):
    """16-bit and LA tiles are gray by mode: dropped by default, converted with grayscale=convert."""
    u16 = Image.fromarray((np.random.default_rng(1).integers(6000, 11000, (64, 64))).astype(np.uint16))
    files = {"u16.png": encode(u16), "la.png": encode(noise(mode="LA")), "rgb.png": encode(noise())}
    _, rej = run(tmp_path / "a", files, params)
    assert {rej["u16.png"]["reason"], rej["la.png"]["reason"]} == {"grayscale"}
    acc, _ = run(tmp_path / "b", files, dataclasses.replace(params, grayscale="convert"))
    assert acc["u16.png"]["action"] == "stretch+gray_to_rgb" and acc["la.png"]["channels"] == "3"


def test_content_gray_rgb_is_detected(tmp_path, params):
    """An RGB file whose channels are equal is treated as grayscale."""
    acc, rej = run(tmp_path, {"g.png": encode(noise(mode="L").convert("RGB")), "c.png": encode(noise())}, params)
    assert rej["g.png"]["reason"] == "grayscale" and "R=G=B" in rej["g.png"]["detail"] and "c.png" in acc


def test_keep_makes_every_tile_one_channel(tmp_path, params):
    """grayscale=keep accepts gray tiles and records channels=1 for every tile, colour included."""
    acc, _ = run(tmp_path, {"g.png": encode(noise(mode="L")), "c.png": encode(noise())},
                 dataclasses.replace(params, grayscale="keep"))
    assert acc["g.png"]["channels"] == acc["c.png"]["channels"] == "1"
    assert acc["c.png"]["action"] == "to_luminance"


def test_decompression_bomb_is_rejected_and_limit_restored(tmp_path, params):
    """An image over max_image_pixels is rejected as a bomb; Pillow's global limit is restored."""
    before = Image.MAX_IMAGE_PIXELS
    small = dataclasses.replace(params, min_size=8, max_image_pixels=64 * 64)
    acc, rej = run(tmp_path, {"big.png": encode(noise((200, 200))), "ok.png": encode(noise())}, small)
    assert rej["big.png"]["reason"] == "bomb" and "ok.png" in acc
    assert Image.MAX_IMAGE_PIXELS == before


def test_blank_and_small_tiles(tmp_path, params):
    """A uniform tile is low_contrast and a tile under min_size is too_small."""
    blank = Image.new("RGB", (64, 64), (40, 90, 30))
    acc, rej = run(tmp_path, {"blank.png": encode(blank), "tiny.png": encode(noise((32, 80))), "ok.png": encode(noise())}, params)
    assert rej["blank.png"]["reason"] == "low_contrast" and rej["tiny.png"]["reason"] == "too_small"


def test_duplicates_keep_the_first(tmp_path, params):
    """An exact duplicate is rejected naming the first copy, which is kept."""
    data = encode(noise())
    acc, rej = run(tmp_path, {"a.png": data, "b.png": data}, params)
    assert "a.png" in acc and rej["b.png"]["reason"] == "duplicate" and "a.png" in rej["b.png"]["detail"]


def test_placeholder_rejects_every_copy(tmp_path, params):
    """The same bytes more than placeholder_repeats times: all copies rejected as placeholder."""
    data = encode(noise(seed=5))
    files = {f"p{i}.png": data for i in range(params.placeholder_repeats + 1)} | {"real.png": encode(noise())}
    acc, rej = run(tmp_path, files, params)
    assert list(acc) == ["real.png"] and {r["reason"] for r in rej.values()} == {"placeholder"}


def test_cloud_rule_is_optional(tmp_path, params, odd_dir):
    """With max_cloud_fraction set, the real cloudy tile is rejected and the clear one kept."""
    files = {p: odd_dir / p for p in ("landsat8_cloudy_truecolour.png", "landsat7_full_tile.png")}
    acc, rej = run(tmp_path, files, dataclasses.replace(params, max_cloud_fraction=0.03))
    assert rej["landsat8_cloudy_truecolour.png"]["reason"] == "cloudy" and "landsat7_full_tile.png" in acc


def test_zero_accepted_is_a_data_error(tmp_path, params):
    """No usable tile stops the stage with a DataError, after writing rejected.csv to show why."""
    raw = make_raw(tmp_path, {"x.png": b"nope"})
    with pytest.raises(DataError, match="accepted 0 of 1"):
        validate(raw, tmp_path / "out", params, progress=False)
    assert read_csv(tmp_path / "out" / "rejected.csv")[0]["reason"] == "unreadable"


def test_missing_manifest_is_a_data_error(tmp_path, params):
    """A raw dir without manifest.csv is a DataError naming it."""
    with pytest.raises(DataError, match="manifest.csv: manifest not found"):
        validate(tmp_path, tmp_path / "out", params, progress=False)


def test_raw_files_are_never_modified(tmp_path, params, odd_dir):
    """validate only reads raw files: contents and mtimes are unchanged."""
    raw = make_raw(tmp_path, {p.name: p for p in odd_dir.iterdir()} | {"z.png": b""})
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (raw / "tiles").iterdir()}
    validate(raw, tmp_path / "out", params, progress=False)
    assert before == {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (raw / "tiles").iterdir()}


def test_report_is_flat_numbers_and_sheet_written(tmp_path, params, odd_dir):
    """report.json holds only numbers (DVC metrics) and rejected.png is a PNG."""
    run(tmp_path, {p.name: p for p in odd_dir.iterdir()}, params)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert all(isinstance(v, int) for v in report.values())
    with Image.open(tmp_path / "out" / "rejected.png") as im:
        assert im.format == "PNG"


def test_bad_param_value_names_the_key():
    """An out-of-range value is refused naming validate.<key>."""
    good = {f.name: 1 for f in dataclasses.fields(ValidateParams)} | {"grayscale": "drop", "max_cloud_fraction": None}
    with pytest.raises(ParamsError, match=r"validate\.max_nodata_fraction: expected 0\.\.1, got 2\.0$"):
        from_mapping(ValidateParams, good | {"max_nodata_fraction": 2}, "validate")


def test_stage_script_runs_and_summarises(tmp_path, repo_root, rsscn7_files):
    """stages/validate.py on a real folder exits 0 and prints the accepted/rejected summary."""
    raw = make_raw(tmp_path, {p.name: p for p in rsscn7_files[:3]} | {"bad.png": b"x"})
    proc = subprocess.run([sys.executable, str(repo_root / "stages" / "validate.py"), "--raw", str(raw),
                           "--out", str(tmp_path / "out"), "--params", str(repo_root / "params.yaml")],
                          cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "accepted 3, rejected 1 (unreadable 1)" in proc.stdout


def tiff_bytes(arr, **kwargs) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kwargs)
    return buf.getvalue()


def colour12(seed=0, size=96) -> np.ndarray:
    """Real-looking 12-bit colour: three differently distributed bands in 0..4095, uint16."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(lo, hi, (size, size)) for lo, hi in ((0, 4096), (500, 2500), (1000, 4096))],
                    axis=-1).astype(np.uint16)


def test_tiff_with_odd_description_is_a_row_not_a_crash(tmp_path, params):
    """The issue's TIFF (description shape [400, 400, null]) gets a row; validate writes both CSVs."""
    black, textured = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (400, 400)).save(black, format="TIFF", tiffinfo={270: '{"shape":[400,400,null]}'})
    noise((400, 400)).save(textured, format="TIFF", tiffinfo={270: '{"shape":[400,400,null]}'})
    acc, rej = run(tmp_path, {"x.tif": black.getvalue(), "y.tif": textured.getvalue()}, params)
    assert rej["x.tif"]["reason"] == "grayscale" and "y.tif" in acc  # judged on its pixels, like any tile


def test_wide_and_planar_colour_tiffs_are_accepted_as_colour(tmp_path, params):
    """12-bit colour (contiguous and planar) is stretched, not cut and judged gray; planar 8-bit RGB is accepted."""
    files = {
        "c12.tif": tiff_bytes(colour12(0), photometric="rgb"),
        "p12.tif": tiff_bytes(np.moveaxis(colour12(1), -1, 0), photometric="rgb", planarconfig="separate"),
        "p8.tif": tiff_bytes(np.moveaxis(np.asarray(noise((96, 96))), -1, 0), photometric="rgb", planarconfig="separate"),
    }
    acc, rej = run(tmp_path, files, params)
    assert not rej, rej
    assert acc["c12.tif"]["mode"] == acc["p12.tif"]["mode"] == "RGB;16"
    assert acc["c12.tif"]["action"] == acc["p12.tif"]["action"] == "stretch+to_rgb"
    assert acc["p8.tif"]["action"] == "as_is"


def test_manifest_paths_outside_raw_are_rejected_unread(tmp_path, params):
    """Absolute, '..', symlinked (file or folder) and FIFO paths are unsafe_path rows; outside images never accepted."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = encode(noise(seed=9))
    (outside / "secret.png").write_bytes(secret)
    raw = make_raw(tmp_path, {"good.png": encode(noise())})
    (raw / "tiles" / "link.png").symlink_to(outside / "secret.png")
    (raw / "tiles" / "dir").symlink_to(outside)
    os.mkfifo(raw / "tiles" / "fifo.png")
    sha = hashlib.sha256(secret).hexdigest()
    bad = [str(outside / "secret.png"), "../outside/secret.png", "tiles/../../outside/secret.png",
           "tiles/link.png", "tiles/dir/secret.png", "tiles/fifo.png"]
    with open(raw / "manifest.csv", "a") as fh:
        fh.writelines(f"{p},test,{sha},{len(secret)},ok,\n" for p in bad)
    validate(raw, tmp_path / "out", params, progress=False)
    accepted = [r["path"] for r in read_csv(tmp_path / "out" / "accepted.csv")]
    rejected = {r["path"]: r["reason"] for r in read_csv(tmp_path / "out" / "rejected.csv")}
    assert accepted == ["tiles/good.png"] and rejected == dict.fromkeys(bad, "unsafe_path")


def test_symlinked_manifest_is_a_data_error(tmp_path, params):
    """A manifest.csv that is a symlink is not followed: one DataError naming it."""
    raw = make_raw(tmp_path, {"good.png": encode(noise())})
    (raw / "manifest.csv").rename(tmp_path / "elsewhere.csv")
    (raw / "manifest.csv").symlink_to(tmp_path / "elsewhere.csv")
    with pytest.raises(DataError, match=r"manifest\.csv: cannot read the manifest: .*symlink"):
        validate(raw, tmp_path / "out", params, progress=False)


def test_eps_named_png_is_unreadable(tmp_path, params):
    """An EPS file named .png is an 'unreadable' row (Pillow is asked only for the project's formats)."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto showpage\n"
    _, rej = run(tmp_path, {"eps.png": eps, "good.png": encode(noise())}, params)
    assert rej["eps.png"]["reason"] == "unreadable" and "PNG/JPEG/TIFF/GIF/WEBP" in rej["eps.png"]["detail"]


# --- property tests: whatever the bytes or tags, a tile is accepted or rejected with a reason ----

SEEDS = {
    "png": encode(noise((64, 64))),
    "jpeg": encode(noise((64, 64)), "JPEG"),
    "gif": encode(noise((64, 64), mode="P"), "GIF"),
    "webp": encode(noise((64, 64)), "WEBP"),
    "tiff": encode(noise((64, 64)), "TIFF"),
    "tiff16": tiff_bytes(colour12(2, 64), photometric="rgb"),
}


def verdict(data: bytes, params: ValidateParams) -> str:
    """The reason inspect_bytes gives (or 'accepted'), under validate's own pixel limit."""
    with ops.pixel_limit(params.max_image_pixels), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            row = inspect_bytes(data, params)
        except _Reject as rej:
            assert rej.reason in REASONS and rej.detail and "\n" not in rej.detail
            return rej.reason
    assert set(row) == {"width", "height", "mode", "channels", "action"}
    return "accepted"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(SEEDS)), st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "delete"]),
                                                          st.integers(0, 1 << 16), st.binary(min_size=1, max_size=16)),
                                                min_size=1, max_size=4))
def test_mutated_image_bytes_give_a_row_with_a_reason(params, kind, edits):
    """Byte flips, cuts, insertions and deletions in real PNG/JPEG/GIF/WebP/TIFF bytes: accepted or a reason."""
    blob = bytearray(SEEDS[kind])
    for op, pos, chunk in edits:
        pos %= max(len(blob), 1)
        if op == "flip":
            blob[pos:pos + len(chunk)] = chunk
        elif op == "cut":
            del blob[pos:]
        elif op == "insert":
            blob[pos:pos] = chunk
        else:
            del blob[pos:pos + len(chunk)]
    assert verdict(bytes(blob), params) in REASONS + ("accepted",)


def ifd_entries(tiff: bytes) -> list[int]:
    """Byte offsets of the 12-byte entries of a little-endian TIFF's first IFD."""
    assert tiff[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", tiff, 4)[0]
    count = struct.unpack_from("<H", tiff, ifd)[0]
    return [ifd + 2 + 12 * i for i in range(count)]


TAG_VALUES = st.one_of(st.integers(0, 0xFFFFFFFF), st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 16, 255, 65535, 1 << 31]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["tiff", "tiff16"]), st.data())
def test_mutated_tiff_tags_give_a_row_with_a_reason(params, kind, data):
    """Any TIFF tag entry given another type, count or value (sizes, bits, samples, offsets): accepted or a reason."""
    blob = bytearray(SEEDS[kind])
    entries = ifd_entries(bytes(blob))
    for _ in range(data.draw(st.integers(1, 3))):
        entry = data.draw(st.sampled_from(entries))
        field = data.draw(st.sampled_from(["type", "count", "value", "tag"]))
        if field == "type":
            struct.pack_into("<H", blob, entry + 2, data.draw(st.integers(0, 20)))
        elif field == "count":
            struct.pack_into("<I", blob, entry + 4, data.draw(TAG_VALUES))
        elif field == "value":
            struct.pack_into("<I", blob, entry + 8, data.draw(TAG_VALUES))
        else:
            struct.pack_into("<H", blob, entry, data.draw(st.sampled_from([254, 256, 257, 258, 259, 262, 270, 273, 277,
                                                                           278, 279, 284, 317, 338, 339, 65000])))
    assert verdict(bytes(blob), params) in REASONS + ("accepted",)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=60), st.builds(json.dumps, st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(["shape", "axes", "x"]), kids, max_size=3),
    max_leaves=10))))
def test_any_tiff_description_gives_a_row_with_a_reason(params, description):
    """Whatever an RGB TIFF's ImageDescription says (odd JSON, shape lists of anything), the tile gets a verdict."""
    buf = io.BytesIO()
    noise((64, 64)).save(buf, format="TIFF", tiffinfo={270: description})
    assert verdict(buf.getvalue(), params) == "accepted"


# --- issue 9: decoding on a process pool, byte-identical for any worker count ----------------------


def mixed_folder(rsscn7_files, odd_dir) -> dict[str, bytes | Path]:
    """Real tiles and odd files plus every kind of reject: broken, blank, tiny, duplicate and placeholder bytes."""
    files: dict[str, bytes | Path] = {p.name: p for p in rsscn7_files[::10]}
    files |= {p.name: p for p in sorted(odd_dir.iterdir())}
    files |= {"zero.png": b"", "text.png": b"not an image\n", "trunc.png": encode(noise((128, 128)))[:3000],
              "blank.png": encode(Image.new("RGB", (64, 64), (40, 90, 30))), "tiny.png": encode(noise((32, 80))),
              "dup.jpg": rsscn7_files[0]}
    files |= {f"ph{i}.png": encode(Image.new("RGB", (64, 64), (1, 2, 3))) for i in range(5)}
    return files


def outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("accepted.csv", "rejected.csv", "report.json", "rejected.png")}


def test_outputs_are_byte_identical_for_any_worker_count(tmp_path, params, rsscn7_files, odd_dir):
    """workers 1 and 2 write the same bytes to all four outputs on real + odd files with every kind of reject."""
    raw = make_raw(tmp_path, mixed_folder(rsscn7_files, odd_dir),
                   extra_rows=["tiles/gone.png,test,,0,ok,", "../escape.png,test,,0,ok,"])
    validate(raw, tmp_path / "one", dataclasses.replace(params, workers=1), progress=False)
    validate(raw, tmp_path / "two", dataclasses.replace(params, workers=2), progress=False)
    one, two = outputs(tmp_path / "one"), outputs(tmp_path / "two")
    assert one == two
    report = json.loads(one["report.json"])
    assert report["total"] > 2 * 16  # more than two pool tasks, so the pool really ran
    assert all(report[f"rejected_{r}"] for r in ("missing", "unsafe_path", "empty", "unreadable", "truncated",
                                                    "duplicate", "placeholder", "low_contrast", "too_small"))


def test_worker_crash_loses_no_row(tmp_path, params, rsscn7_files, monkeypatch):
    """Tiles that kill their worker process are 'crashed' rows; every other tile gets the verdict it gets in-process."""
    import satgan.validate as validate_module

    real_inspect = validate_module.inspect_bytes

    def inspect_or_die(data, p):
        if data.startswith(b"CRASH"):
            os.kill(os.getpid(), signal.SIGKILL)  # what a segfaulting decoder or the OOM killer does
        return real_inspect(data, p)

    files = {p.name: p for p in rsscn7_files[::8]} | {"bad.png": b"not an image\n"}
    expected_acc, expected_rej = run(tmp_path / "ref", files, dataclasses.replace(params, workers=1))
    monkeypatch.setattr(validate_module, "inspect_bytes", inspect_or_die)
    crashers = {"crash_a.png": b"CRASH a", "crash_b.png": b"CRASH b"}
    acc, rej = run(tmp_path / "pool", files | crashers, dataclasses.replace(params, workers=2))
    for name in crashers:
        assert rej.pop(name) | {"path": ""} == {
            "path": "", "reason": "crashed", "detail": "decoding it killed the worker process (signal SIGKILL)"}
    assert acc == expected_acc and rej == expected_rej


def test_workers_param_is_checked():
    """validate.workers must be 1..256: 0 is one error naming the key."""
    good = {f.name: 1 for f in dataclasses.fields(ValidateParams)} | {"grayscale": "drop", "max_cloud_fraction": None}
    with pytest.raises(ParamsError, match=r"validate\.workers: expected 1\.\.256, got 0$"):
        from_mapping(ValidateParams, good | {"workers": 0}, "validate")


def test_labels_travel_from_the_manifest_to_accepted_csv(tmp_path, params, rsscn7_files):
    """A manifest label column is copied into accepted.csv, each tile keeping its own label."""
    files = {"a.jpg": rsscn7_files[0], "b.jpg": rsscn7_files[40], "c.jpg": rsscn7_files[0]}  # c duplicates a
    raw = make_raw(tmp_path, files)
    lines = (raw / "manifest.csv").read_text().splitlines()
    labels = {"a.jpg": "grass", "b.jpg": "field", "c.jpg": "grass"}
    rows = [lines[0] + ",label"] + [f"{line},{labels[line.split(',')[0][6:]]}" for line in lines[1:]]
    (raw / "manifest.csv").write_text("\n".join(rows) + "\n")
    validate(raw, tmp_path / "out", params, progress=False)
    accepted = read_csv(tmp_path / "out" / "accepted.csv")
    assert [(r["path"], r["label"]) for r in accepted] == [("tiles/a.jpg", "grass"), ("tiles/b.jpg", "field")]


def test_unlabelled_manifest_gives_the_usual_accepted_columns(tmp_path, params, rsscn7_files):
    """Without a manifest label column accepted.csv has exactly its usual columns."""
    run(tmp_path, {"a.jpg": rsscn7_files[0]}, params)
    header = (tmp_path / "out" / "accepted.csv").read_text().splitlines()[0]
    assert header == "path,sha256,width,height,mode,channels,action"
