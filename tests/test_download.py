"""Tests for satgan.download: params, fetch (against a real loopback tile server), sources, archive safety, resume."""

from __future__ import annotations

import copy
import dataclasses
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tracemalloc
import unicodedata
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mercantile
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tqdm import tqdm

from satgan.download import DownloadParams, run_download
from satgan.download.fetch import Fetcher, FetchError, parse_retry_after
from satgan.download.output import FAILED_MANIFEST, JOURNAL, MANIFEST, SCRATCH, Row, safe_dest
from satgan.download.runner import FailureWatch, bounded_map
from satgan.download.sources import xyz_url
from satgan.errors import DataError, DownloadError, ParamsError
from satgan.fsutil import read_csv, sha256_bytes, sha256_file
from satgan.params import from_mapping, read_params_file
from tileserver import TileServer

# Tiny timeouts and backoffs keep the fault tests fast; the faults still take the real code paths.
FAST_HTTP = {"concurrency": 4, "timeout_s": 0.3, "retries": 3, "backoff_s": 0.01, "max_retry_after_s": 0.05}
Z, X0, Y0 = 10, 163, 395


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) else value
    return out


def download_doc(repo_root: Path, **over: Any) -> dict[str, Any]:
    """The repository's ``download`` section with ``over`` deep-merged in."""
    return merge(read_params_file(repo_root / "params.yaml")["download"], over)


def make_params(repo_root: Path, **over: Any) -> DownloadParams:
    """DownloadParams from the repository's params.yaml with overrides."""
    return from_mapping(DownloadParams, download_doc(repo_root, **over), key="download", file="params.yaml")


def bbox_for(nx: int, ny: int, z: int = Z, x0: int = X0, y0: int = Y0) -> list[float]:
    """A lon/lat bbox covering exactly the nx * ny tiles starting at (x0, y0)."""
    nw, se = mercantile.bounds(x0, y0, z), mercantile.bounds(x0 + nx - 1, y0 + ny - 1, z)
    eps = 1e-6
    return [nw.west + eps, se.south + eps, se.east - eps, nw.north - eps]


def xyz_params(repo_root: Path, srv: TileServer, nx: int, ny: int, **over: Any) -> DownloadParams:
    """Params for the xyz source against the loopback server."""
    base = {"source": "xyz", "http": FAST_HTTP, "xyz": {"url": srv.url, "bbox": bbox_for(nx, ny), "zoom": Z}}
    return make_params(repo_root, **merge(base, over))


def manifest(out: Path, failed: bool = False) -> list[dict[str, str]]:
    """The manifest rows of ``out`` (of its failed run's manifest.failed.csv with ``failed``)."""
    return read_csv(out / (FAILED_MANIFEST if failed else MANIFEST))


def by_source(out: Path) -> dict[str, dict[str, str]]:
    """Manifest rows keyed by their tile key (z, x, y) parsed from the URL."""
    rows = {}
    for row in manifest(out):
        z, x, y = row["source"].rstrip("/").split("/")[-3:]
        rows[(int(z), int(x), int(y))] = row
    return rows


@pytest.fixture(scope="module")
def bodies(rsscn7_files: list[Path]) -> list[bytes]:
    """Real RSSCN7 JPEG bytes (one per class folder) to serve as tiles."""
    return [f.read_bytes() for f in rsscn7_files[::40]]


# --- params -------------------------------------------------------------------------------------


def test_repo_params_load() -> None:
    """The repository's params.yaml download section loads and defaults to the sample source."""
    params = make_params(Path(__file__).resolve().parents[1])
    assert params.source == "sample"


def test_bad_url_scheme_is_params_error(repo_root: Path) -> None:
    """An ftp:// tile URL is refused with a ParamsError naming download.xyz.url."""
    with pytest.raises(ParamsError, match=r"download\.xyz\.url: expected an http:// or https:// URL"):
        make_params(repo_root, xyz={"url": "ftp://example.org/{z}/{x}/{y}.png"})


def test_bad_bbox_is_params_error(repo_root: Path) -> None:
    """A bbox with west > east is refused naming download.xyz.bbox."""
    with pytest.raises(ParamsError, match=r"download\.xyz\.bbox"):
        make_params(repo_root, xyz={"bbox": [10.0, 40.0, 5.0, 41.0]})


def test_bbox_over_max_tiles_is_params_error(repo_root: Path) -> None:
    """A bbox covering more tiles than max_tiles is refused with the count."""
    with pytest.raises(ParamsError, match=r"download\.xyz\.max_tiles: expected >= 36, .*got 35$"):
        make_params(repo_root, xyz={"bbox": bbox_for(6, 6), "zoom": Z, "max_tiles": 35})


def test_archive_source_requires_sha256(repo_root: Path) -> None:
    """Selecting the archive source without a sha256 pin is a ParamsError naming the key."""
    with pytest.raises(ParamsError, match=r"download\.archive\.sha256"):
        make_params(repo_root, source="archive", archive={"location": "x.zip"})


def test_archive_file_url_is_params_error(repo_root: Path) -> None:
    """A file:// archive location is refused (only http, https or a plain path)."""
    with pytest.raises(ParamsError, match=r"download\.archive\.location: expected an http:// or https:// URL"):
        make_params(repo_root, archive={"location": "file:///etc/passwd"})


def test_stage_bad_params_exits_2_without_traceback(repo_root: Path, tmp_path: Path) -> None:
    """The stage script turns a bad key into one 'download: error:' line and exit status 2."""
    doc = read_params_file(repo_root / "params.yaml")
    doc["download"]["xyz"]["url"] = "gopher://example.org/{z}/{x}/{y}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [sys.executable, "stages/download.py", "--out", str(tmp_path / "out"), "--params", str(tmp_path / "params.yaml")],
        cwd=repo_root, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "download: error:" in proc.stderr and "download.xyz.url" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- fetch --------------------------------------------------------------------------------------


def test_parse_retry_after_seconds_and_date() -> None:
    """Retry-After is read as delta-seconds or as an HTTP date."""
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after(None) is None


def test_fetcher_refuses_non_http_scheme(repo_root: Path) -> None:
    """The fetcher never opens file:// (or any non-http) URLs, even if handed one."""
    with pytest.raises(FetchError, match="non-http"):
        Fetcher(make_params(repo_root).http).get_once("file:///etc/passwd")


def test_safe_dest_refuses_escapes(tmp_path: Path) -> None:
    """Absolute paths, '..' and symlinked directories pointing outside are refused."""
    out = tmp_path / "out"
    (out / "tiles").mkdir(parents=True)
    (out / "tiles" / "link").symlink_to(tmp_path)
    for bad in ("/etc/passwd", "tiles/../../x.png", "tiles\\..\\..\\x.png", "tiles/link/x.png"):
        with pytest.raises(ValueError):
            safe_dest(out, bad)
    assert safe_dest(out, "tiles/a/b.png") == out / "tiles/a/b.png"


# --- xyz ----------------------------------------------------------------------------------------


def test_xyz_url_fills_placeholders_and_stable_subdomain() -> None:
    """{z}/{x}/{y} are filled in any order and {s} is picked from x+y, so a tile's URL never changes."""
    tile = mercantile.Tile(x=5, y=7, z=4)
    assert xyz_url("https://{s}.t.org/{z}/{y}/{x}.png", tile, ("a", "b", "c")) == "https://a.t.org/4/7/5.png"


def test_xyz_fetches_every_tile_in_yx_order(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """A {z}/{y}/{x} (USGS-style) template fetches each bbox tile once, with our User-Agent, as images."""
    with TileServer(bodies, yx_order=True) as srv:
        params = xyz_params(repo_root, srv, 3, 2)
        summary = run_download(params, tmp_path)
    assert summary.counts["ok"] == 6 and set(srv.hits.values()) == {1}
    assert srv.user_agents == {params.http.user_agent}
    for row in manifest(tmp_path):
        z, y, x = (int(p) for p in row["source"].split("/")[-3:])  # the URL is .../tile/{z}/{y}/{x}
        assert row["path"] == f"tiles/{z}/{x}/{y}.jpg"
        assert (tmp_path / row["path"]).read_bytes() == srv.body_for(Z, x, y)
        assert sha256_file(tmp_path / row["path"]) == row["sha256"]


def test_xyz_transient_faults_are_retried(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """500, 503, 429 (long Retry-After, capped), timeout, reset and truncated body all recover on retry."""
    kinds = ["500", "503", "429", "timeout", "reset", "truncate"]
    faults = {(Z, X0 + i, Y0): [kind] for i, kind in enumerate(kinds)}
    start = time.monotonic()
    with TileServer(bodies, faults=faults, retry_after="30") as srv:
        summary = run_download(xyz_params(repo_root, srv, len(kinds), 1), tmp_path)
    assert summary.counts["ok"] == len(kinds)
    assert all(srv.hits[key] == 2 for key in faults)
    assert time.monotonic() - start < 10  # Retry-After: 30 was capped by max_retry_after_s


def test_xyz_permanent_faults_become_failure_rows(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """404 (not retried), an HTML body and a non-image body are failed rows with their reason."""
    faults = {(Z, X0, Y0): ["404"] * 9, (Z, X0 + 1, Y0): ["html"] * 9, (Z, X0 + 2, Y0): ["garbage"] * 9}
    with TileServer(bodies, faults=faults) as srv:
        run_download(xyz_params(repo_root, srv, 4, 1, max_failed_fraction=1.0), tmp_path)
    rows = by_source(tmp_path)
    assert srv.hits[(Z, X0, Y0)] == 1 and "HTTP 404" in rows[(Z, X0, Y0)]["error"]
    assert "Content-Type text/html" in rows[(Z, X0 + 1, Y0)]["error"]
    assert "not an image" in rows[(Z, X0 + 2, Y0)]["error"]
    assert [rows[(Z, X0 + i, Y0)]["status"] for i in range(4)] == ["failed", "failed", "failed", "ok"]
    assert all(rows[(Z, X0 + i, Y0)]["path"] == "" for i in range(3))


def test_xyz_retries_exhausted_is_failure_row(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """A tile that keeps answering 500 is tried 1 + retries times, then becomes a failed row."""
    with TileServer(bodies, faults={(Z, X0, Y0): ["500"] * 9}) as srv:
        run_download(xyz_params(repo_root, srv, 2, 1, max_failed_fraction=1.0, http={"retries": 2}), tmp_path)
    assert srv.hits[(Z, X0, Y0)] == 3
    assert "after 3 attempts" in by_source(tmp_path)[(Z, X0, Y0)]["error"]


def test_too_many_failures_raise_after_writing_manifest(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """More failures than max_failed_fraction raise DownloadError, and manifest.failed.csv lists them."""
    with TileServer(bodies, faults={(Z, X0, Y0): ["404"]}) as srv:
        with pytest.raises(DownloadError, match=r"1 of 4 tiles failed .*max_failed_fraction=0\.05.*manifest\.failed\.csv"):
            run_download(xyz_params(repo_root, srv, 4, 1), tmp_path)
    assert [r["status"] for r in manifest(tmp_path, failed=True)].count("failed") == 1


def test_xyz_rerun_resumes_and_refetches_tampered(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """A rerun fetches nothing already on disk, except a tile whose bytes no longer match its sha256."""
    with TileServer(bodies) as srv:
        params = xyz_params(repo_root, srv, 3, 1)
        run_download(params, tmp_path)
        (tmp_path / f"tiles/{Z}/{X0}/{Y0}.jpg").write_bytes(b"tampered")
        summary = run_download(params, tmp_path)
    assert summary.counts["resumed"] == 2 and summary.counts["ok"] == 1
    assert srv.hits[(Z, X0, Y0)] == 2 and srv.hits[(Z, X0 + 1, Y0)] == 1


@pytest.mark.slow
def test_kill_9_mid_run_then_resume(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """After kill -9 mid-run no half tile exists, and the rerun does not re-request tiles already fetched."""
    out = tmp_path / "out"
    with TileServer(bodies, latency_s=0.15) as srv:
        doc = read_params_file(repo_root / "params.yaml")
        doc["download"] = download_doc(
            repo_root, source="xyz", http={**FAST_HTTP, "concurrency": 2, "timeout_s": 5.0},
            xyz={"url": srv.url, "bbox": bbox_for(6, 5), "zoom": Z},
        )
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
        proc = subprocess.Popen(
            [sys.executable, "stages/download.py", "--out", str(out), "--params", str(tmp_path / "params.yaml")],
            cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while sum(srv.hits.values()) < 12 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert sum(srv.hits.values()) < 30, "the run finished before it could be killed"
        done = set()
        for line in (out / JOURNAL).read_text().splitlines():
            if line.endswith("}"):  # a line cut short by the kill is ignored by the resume too
                _, z, x, y = Path(json.loads(line)["path"]).with_suffix("").parts
                done.add((int(z), int(x), int(y)))
        assert len(done) >= 5
        staged = [p for p in (out / SCRATCH).rglob("*") if p.is_file() and not p.name.startswith(".")]
        assert len(staged) >= len(done) and not (out / "tiles").exists()  # nothing committed before success
        for path in staged:
            with Image.open(path) as im:
                im.load()  # a half-written tile would fail to decode
        before = srv.hits.copy()
        summary = run_download(from_mapping(DownloadParams, doc["download"], key="download"), out)
    assert summary.counts["ok"] + summary.counts["resumed"] == 30
    assert summary.counts["resumed"] >= len(done)
    assert all(srv.hits[key] == before[key] == 1 for key in done)
    assert not [p for p in (out / "tiles").rglob(".*")] and not (out / JOURNAL).exists()


# --- sample -------------------------------------------------------------------------------------


def test_sample_cuts_expected_tiles(repo_root: Path, tmp_path: Path) -> None:
    """The embedded Sentinel-2 scene cut at 256/256 gives 7x7 RGB 256x256 PNG tiles, each in the manifest."""
    summary = run_download(make_params(repo_root, sample={"tile_size": 256, "stride": 256}), tmp_path)
    rows = manifest(tmp_path)
    assert summary.counts["ok"] == len(rows) == ((1947 - 256) // 256 + 1) * ((1933 - 256) // 256 + 1) == 49
    for row in rows[:5]:
        with Image.open(tmp_path / row["path"]) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (256, 256))
        assert sha256_file(tmp_path / row["path"]) == row["sha256"]
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "tiles").rglob("*.png")) == sorted(
        r["path"] for r in rows
    )


def test_rerun_with_new_params_removes_stale_tiles(repo_root: Path, tmp_path: Path) -> None:
    """Tiles from an earlier config (and stray files) are deleted so tiles/ matches the params exactly."""
    run_download(make_params(repo_root, sample={"tile_size": 256, "stride": 256}), tmp_path)
    (tmp_path / "tiles/old").mkdir()
    (tmp_path / "tiles/old/stray.png").write_bytes(b"x")
    run_download(make_params(repo_root, sample={"tile_size": 512, "stride": 512}), tmp_path)
    files = sorted(p for p in (tmp_path / "tiles").rglob("*") if p.is_file())
    assert len(files) == 9 and not (tmp_path / "tiles/old").exists()


# --- folder -------------------------------------------------------------------------------------


def test_folder_copies_matching_images(repo_root: Path, tmp_path: Path, rsscn7_files: list[Path]) -> None:
    """Images with a listed extension are copied (not linked), keeping their relative paths; others ignored."""
    src = tmp_path / "src"
    for f in rsscn7_files[:3] + rsscn7_files[40:42]:
        dest = src / f.parent.name / f.name.replace(".jpg", ".JPG")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.read_bytes())
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    summary = run_download(make_params(repo_root, source="folder", folder={"path": str(src)}), out)
    assert summary.counts["ok"] == 5
    for row in manifest(out):
        copied = out / row["path"]
        assert not copied.is_symlink() and copied.read_bytes() == Path(row["source"]).read_bytes()
        assert row["path"] == "tiles/" + Path(row["source"]).relative_to(src).as_posix()


def test_folder_missing_is_data_error(repo_root: Path, tmp_path: Path) -> None:
    """A folder path that does not exist is a DataError naming the key and path."""
    with pytest.raises(DataError, match=r"download\.folder\.path: .*nope"):
        run_download(make_params(repo_root, source="folder", folder={"path": str(tmp_path / "nope")}), tmp_path / "o")


# --- archive ------------------------------------------------------------------------------------


def archive_params(repo_root: Path, path: Path | str, sha: str, **over: Any) -> DownloadParams:
    """Params for the archive source at ``path`` pinned to ``sha``."""
    return make_params(repo_root, source="archive", max_failed_fraction=1.0,
                       archive={"location": str(path), "sha256": sha, **over})


def statuses(out: Path, failed: bool = False) -> dict[str, tuple[str, str]]:
    """Archive manifest rows as member name -> (status, error)."""
    return {r["source"].split("!", 1)[1]: (r["status"], r["error"]) for r in manifest(out, failed)}


def test_zip_refuses_slip_absolute_and_symlink(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """A zip with '..', absolute and symlink members extracts only the safe image; each refusal is a row."""
    zpath = tmp_path / "a.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("good/a.jpg", bodies[0])
        zf.writestr("../../evil.jpg", bodies[1])
        zf.writestr("/abs.jpg", bodies[1])
        link = zipfile.ZipInfo("link.jpg")
        link.external_attr = (0o120777 << 16)  # a Unix symlink entry
        zf.writestr(link, "/etc/passwd")
        zf.writestr("readme.txt", "hello")
    out = tmp_path / "out"
    run_download(archive_params(repo_root, zpath, sha256_file(zpath)), out)
    st = statuses(out)
    assert st["good/a.jpg"] == ("ok", "")
    assert st["../../evil.jpg"][0] == st["/abs.jpg"][0] == st["link.jpg"][0] == "refused"
    assert "'..'" in st["../../evil.jpg"][1] and "absolute" in st["/abs.jpg"][1] and "symlink" in st["link.jpg"][1]
    assert st["readme.txt"][0] == "skipped"
    assert not (tmp_path / "evil.jpg").exists()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "manifest.csv", "tiles/good/a.jpg"
    ]


def test_tar_refuses_links_devices_and_slip(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """A tar.gz with symlink, hardlink, device and '..' members extracts only the regular safe file."""
    tpath = tmp_path / "a.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.size, info.linkname = kind, len(data), linkname
            tf.addfile(info, io.BytesIO(data) if data else None)
        add("ok.jpg", data=bodies[0])
        add("sym.jpg", tarfile.SYMTYPE, linkname="/etc/passwd")
        add("hard.jpg", tarfile.LNKTYPE, linkname="ok.jpg")
        add("dev.jpg", tarfile.CHRTYPE)
        add("../up.jpg", data=bodies[1])
    out = tmp_path / "out"
    run_download(archive_params(repo_root, tpath, sha256_file(tpath)), out)
    st = statuses(out)
    assert st.pop("ok.jpg") == ("ok", "")
    assert {k: v[0] for k, v in st.items()} == dict.fromkeys(["sym.jpg", "hard.jpg", "dev.jpg", "../up.jpg"], "refused")
    assert not (tmp_path / "up.jpg").exists()


def test_archive_size_and_count_caps(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """Members past max_members or max_total_bytes (declared size) are refused rows."""
    zpath = tmp_path / "caps.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i in range(4):
            zf.writestr(f"t{i}.jpg", bodies[i])
    cap = len(bodies[0]) + len(bodies[1]) + 10
    out = tmp_path / "out"
    run_download(archive_params(repo_root, zpath, sha256_file(zpath), max_members=3, max_total_bytes=cap), out)
    st = statuses(out)
    assert [st[f"t{i}.jpg"][0] for i in range(4)] == ["ok", "ok", "refused", "refused"]
    assert "max_total_bytes" in st["t2.jpg"][1] and "max_members" in st["t3.jpg"][1]


def test_zip_bomb_lying_about_its_size_is_stopped(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """A member whose declared size understates its real size never lands as a tile."""
    zpath = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.jpg", bodies[0] + b"\0" * 2_000_000)
    data = bytearray(zpath.read_bytes())
    small = (100).to_bytes(4, "little")
    data[22:26] = small  # local header's uncompressed size
    central = data.index(b"PK\x01\x02")
    data[central + 24 : central + 28] = small  # central directory's uncompressed size
    zpath.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(DownloadError, match="no tiles"):
        run_download(archive_params(repo_root, zpath, sha256_file(zpath)), out)
    status, error = statuses(out, failed=True)["bomb.jpg"]
    assert status in ("failed", "refused") and error
    assert not (out / "tiles/bomb.jpg").exists()


def test_archive_sha256_mismatch_is_clear_error(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """An archive whose sha256 differs from the pin stops the stage, naming both hashes and the key."""
    zpath = tmp_path / "a.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("a.jpg", bodies[0])
    with pytest.raises(DownloadError, match=r"sha256 is [0-9a-f]{64}, but download\.archive\.sha256 pins 0{64}"):
        run_download(archive_params(repo_root, zpath, "0" * 64), tmp_path / "out")


def test_archive_over_http(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """An archive URL is fetched with the same HTTP code (retrying a 503) and extracted."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x/a.jpg", bodies[0])
    blob = buf.getvalue()
    with TileServer([blob], faults={(0, 0, 0): ["503"]}, content_type="application/zip") as srv:
        url = srv.url.format(z=0, x=0, y=0)
        run_download(archive_params(repo_root, url, sha256_bytes(blob)), tmp_path / "out")
        assert srv.hits[(0, 0, 0)] == 2
    assert (tmp_path / "out/tiles/x/a.jpg").read_bytes() == bodies[0]
    assert not (tmp_path / "out/.download").exists()


# --- issue 10: nothing outside the output, a failed run destroys nothing, no traceback -------------


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (symlinks not followed) with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def folder_src(tmp_path: Path, files: list[Path]) -> Path:
    """A source folder holding copies of ``files``."""
    src = tmp_path / "src"
    src.mkdir()
    for f in files:
        (src / f.name).write_bytes(f.read_bytes())
    return src


def test_symlinked_tiles_folder_is_refused_and_its_target_untouched(repo_root: Path, tmp_path: Path,
                                                                    rsscn7_files: list[Path]) -> None:
    """out/tiles linked to another folder: one DataError, and that folder keeps every file (nothing written or deleted)."""
    big = tmp_path / "big"
    (big / "sub").mkdir(parents=True)
    (big / "precious.txt").write_text("x")
    (big / "sub" / "keep.jpg").write_bytes(b"y")
    out = tmp_path / "out"
    out.mkdir()
    (out / "tiles").symlink_to(big)
    src = folder_src(tmp_path, rsscn7_files[:2])
    with pytest.raises(DataError, match=r"out/tiles is a symlink .*never through a link"):
        run_download(make_params(repo_root, source="folder", folder={"path": str(src)}), out)
    assert tree(big) == {"precious.txt": b"x", "sub/keep.jpg": b"y"}
    assert sorted(p.name for p in out.iterdir()) == ["tiles"]


def test_stale_cleanup_removes_links_never_their_targets(repo_root: Path, tmp_path: Path, rsscn7_files: list[Path]) -> None:
    """Links planted below out/tiles are removed as links after a successful run; what they point to is untouched."""
    outside = tmp_path / "outside"
    (outside / "d").mkdir(parents=True)
    (outside / "d" / "f.jpg").write_bytes(b"keep")
    out = tmp_path / "out"
    (out / "tiles").mkdir(parents=True)
    (out / "tiles" / "dir_link").symlink_to(outside / "d")
    (out / "tiles" / "file_link.jpg").symlink_to(outside / "d" / "f.jpg")
    src = folder_src(tmp_path, rsscn7_files[:2])
    summary = run_download(make_params(repo_root, source="folder", folder={"path": str(src)}), out)
    assert summary.counts["ok"] == 2 and tree(outside) == {"d/f.jpg": b"keep"}
    assert sorted(p.name for p in (out / "tiles").iterdir()) == sorted(f.name for f in rsscn7_files[:2])


def test_failed_rerun_keeps_the_previous_tiles(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """36 good xyz tiles, then a rerun whose server answers 500: exit error, and tiles/ + manifest.csv are unchanged."""
    with TileServer(bodies) as good:
        run_download(xyz_params(repo_root, good, 6, 6), tmp_path)
    before = tree(tmp_path)
    assert len([k for k in before if k.startswith("tiles/")]) == 36
    faults = {(Z, X0 + i, Y0 + j): ["500"] * 9 for i in range(6) for j in range(6)}
    with TileServer(bodies, faults=faults) as bad:
        with pytest.raises(DownloadError, match=r"produced no tiles; .*manifest\.failed\.csv; .* are kept"):
            run_download(xyz_params(repo_root, bad, 6, 6, http={"retries": 0}, max_failed_fraction=1.0), tmp_path)
    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if k != FAILED_MANIFEST} == before
    assert [r["status"] for r in manifest(tmp_path, failed=True)] == ["failed"] * 36


def test_failed_run_staged_tiles_are_resumed_then_committed(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """A run failing on too many 404s commits nothing; the next run fetches only the missing tiles, then commits."""
    faults = {(Z, X0 + i, Y0): ["404"] for i in range(2)}
    with TileServer(bodies, faults=faults) as srv:
        with pytest.raises(DownloadError, match="2 of 4 tiles failed"):
            run_download(xyz_params(repo_root, srv, 4, 1), tmp_path)
        assert not (tmp_path / "tiles").exists() and not (tmp_path / MANIFEST).exists()
        summary = run_download(xyz_params(repo_root, srv, 4, 1), tmp_path)
    assert summary.counts == {"ok": 2, "resumed": 2, "failed": 0, "refused": 0, "skipped": 0}
    assert all(n == 2 for k, n in srv.hits.items() if k in faults) and sum(srv.hits.values()) == 6
    assert len(list((tmp_path / "tiles").rglob("*.jpg"))) == 4
    assert not (tmp_path / SCRATCH).exists() and not (tmp_path / FAILED_MANIFEST).exists()


def test_malformed_journal_and_manifest_records_are_ignored(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """Garbage, non-object and field-less journal lines and a bad manifest row are skipped: the run refetches, no traceback."""
    with TileServer(bodies) as srv:
        params = xyz_params(repo_root, srv, 2, 1)
        run_download(params, tmp_path)
        text = (tmp_path / MANIFEST).read_text().splitlines()
        (tmp_path / MANIFEST).write_text("\n".join(text[:2] + ["tiles/x.jpg,src,abc,not-a-number,ok,"]) + "\n")
        (tmp_path / JOURNAL).write_text('not json\n[1, 2]\n{"source": 3}\n{"path": "tiles/a", "source": "s"}\n')
        summary = run_download(params, tmp_path)
    assert summary.counts["ok"] + summary.counts["resumed"] == 2


def test_output_that_is_a_file_is_one_error_line(repo_root: Path, tmp_path: Path) -> None:
    """--out naming an existing file is a DataError, not a FileExistsError traceback."""
    (tmp_path / "out").write_text("x")
    with pytest.raises(DataError, match="exists and is not a folder"):
        run_download(make_params(repo_root), tmp_path / "out")


def test_download_outputs_honour_the_umask(repo_root: Path, tmp_path: Path, rsscn7_files: list[Path]) -> None:
    """With umask 022 the tiles and the manifest are 0644 (readable in a shared workspace), not mkstemp's 0600."""
    src = folder_src(tmp_path, rsscn7_files[:1])
    old = os.umask(0o022)
    try:
        run_download(make_params(repo_root, source="folder", folder={"path": str(src)}), tmp_path / "out")
    finally:
        os.umask(old)
    for path in (tmp_path / "out" / MANIFEST, tmp_path / "out" / "tiles" / rsscn7_files[0].name):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_folder_reads_only_regular_files_inside_it(repo_root: Path, tmp_path: Path, rsscn7_files: list[Path]) -> None:
    """A FIFO (never blocks), links to /dev/zero and /etc/hostname, an oversized file and a linked folder are rows."""
    src = folder_src(tmp_path, rsscn7_files[:1])
    os.mkfifo(src / "fifo.png")
    (src / "zero.png").symlink_to("/dev/zero")
    (tmp_path / "hostname.png").write_text("an outside file")
    (src / "host.png").symlink_to(tmp_path / "hostname.png")
    (src / "inside.jpg").symlink_to(src / rsscn7_files[0].name)
    (src / "big.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 300_000)
    (src / "linked_dir").symlink_to(tmp_path)
    params = make_params(repo_root, source="folder", max_failed_fraction=1.0,
                         folder={"path": str(src), "max_file_bytes": 250_000})
    signal.alarm(30)  # a FIFO opened for blocking reads would hang here forever
    try:
        run_download(params, tmp_path / "out")
    finally:
        signal.alarm(0)
    rows = {Path(r["source"]).name: (r["status"], r["error"]) for r in manifest(tmp_path / "out")}
    assert rows[rsscn7_files[0].name][0] == rows["inside.jpg"][0] == "ok"
    assert rows["fifo.png"] == ("refused", f"{src / 'fifo.png'} is not a regular file (a FIFO)")
    assert rows["zero.png"][0] == rows["host.png"][0] == "refused" and "outside the folder" in rows["host.png"][1]
    assert rows["big.jpg"][0] == "refused" and "download.folder.max_file_bytes" in rows["big.jpg"][1]
    assert rows["linked_dir"] == ("skipped", "symlinked folder not followed")
    assert "host.png" not in tree(tmp_path / "out" / "tiles")


def test_archive_member_aliases_are_refused(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """./b.jpg after b.jpg, c//d.jpg and c/./d.jpg after c/d.jpg, B.JPG and an NFD name: one file each, others refused."""
    names = ["b.jpg", "./b.jpg", "c/d.jpg", "c//d.jpg", "c/./d.jpg", "B.JPG", "caf\u00e9.jpg", "cafe\u0301.jpg"]
    zpath = tmp_path / "a.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i, name in enumerate(names):
            zf.writestr(name, bodies[i % 2] + bytes([i]))
    out = tmp_path / "out"
    run_download(archive_params(repo_root, zpath, sha256_file(zpath)), out)
    st_ = statuses(out)
    assert [st_[n][0] for n in names] == ["ok", "refused", "ok", "refused", "refused", "refused", "ok", "refused"]
    assert "same file as 'b.jpg'" in st_["./b.jpg"][1] and "same file as 'c/d.jpg'" in st_["c/./d.jpg"][1]
    assert tree(out / "tiles") == {"b.jpg": bodies[0] + b"\0", "c/d.jpg": bodies[0] + b"\2", "caf\u00e9.jpg": bodies[0] + b"\6"}


ALIAS_PARTS = st.lists(st.sampled_from(["a", "A", "b", "\u00e9", "e\u0301", "\u00df", "ss", "K", "\u212a"]), min_size=1, max_size=3)


@st.composite
def member_names(draw: st.DrawFn) -> list[str]:
    """Archive member names that often alias one another: case, Unicode forms, ./, // and /./ spellings."""
    out = []
    for _ in range(draw(st.integers(1, 6))):
        parts = ["".join(draw(ALIAS_PARTS)) for _ in range(draw(st.integers(1, 2)))]
        seps = [draw(st.sampled_from(["/", "//", "/./"])) for _ in parts[1:]]
        name = parts[0] + "".join(s + p for s, p in zip(seps, parts[1:]))
        out.append(draw(st.sampled_from(["", "./"])) + name + draw(st.sampled_from([".jpg", ".JPG"])))
    return list(dict.fromkeys(out))  # a zip may repeat a name; the generator varies spellings instead


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=member_names())
def test_generated_member_names_never_overwrite_each_other(repo_root: Path, bodies: list[bytes], names: list[str]) -> None:
    """Whatever the names: each ok row's file holds its own member's bytes, and no two ok rows are one file anywhere."""
    with tempfile.TemporaryDirectory() as tmp:
        zpath = Path(tmp) / "a.zip"
        with zipfile.ZipFile(zpath, "w") as zf:
            for i, name in enumerate(names):
                zf.writestr(name, bodies[0] + i.to_bytes(2, "big"))
        out = Path(tmp) / "out"
        run_download(archive_params(repo_root, zpath, sha256_file(zpath)), out)
        rows = manifest(out)
        ok = [r for r in rows if r["status"] == "ok"]
        assert len(rows) == len(names) and ok
        keys = [unicodedata.normalize("NFC", unicodedata.normalize("NFC", r["path"]).casefold()) for r in ok]
        assert len(set(keys)) == len(keys)
        for r in ok:
            i = names.index(r["source"].split("!", 1)[1])
            assert (out / r["path"]).read_bytes() == bodies[0] + i.to_bytes(2, "big")
        assert sorted(tree(out / "tiles")) == sorted(r["path"][len("tiles/"):] for r in ok)
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["a.zip", "out"]


class DripServer:
    """A loopback HTTP server that sends its answer one byte at a time (its headers, or its body), forever."""

    def __init__(self, part: str, interval_s: float = 0.05, tls: ssl.SSLContext | None = None) -> None:
        self.part, self.interval_s, self.tls = part, interval_s, tls
        self.sock = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.sock.getsockname()[1]}/{{z}}/{{x}}/{{y}}"
        self.stop = threading.Event()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n"
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:
                conn.close()
                return
        with conn:
            conn.recv(65536)
            if self.part == "body":
                conn.sendall(head)
            payload = head if self.part == "headers" else b"\x89PNG" + b"\0" * 1000000
            for i in range(len(payload)):
                if self.stop.is_set():
                    return
                try:
                    conn.sendall(payload[i:i + 1])
                except OSError:
                    return  # the client gave up: what the test wants
                time.sleep(self.interval_s)

    def __enter__(self) -> DripServer:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("part", ["headers", "body"])
def test_slow_drip_server_is_cut_at_the_wall_clock_limit(repo_root: Path, tmp_path: Path, part: str) -> None:
    """A server dripping 20 bytes/s (headers or body) never trips a socket timeout; the request still ends at timeout_s."""
    with DripServer(part) as srv:
        _assert_cut_at_the_wall_clock_limit(repo_root, tmp_path, srv)


def _assert_cut_at_the_wall_clock_limit(repo_root: Path, tmp_path: Path, srv: DripServer) -> None:
    """A one-tile download from ``srv`` with timeout_s 0.5 fails within 3 s, its manifest row naming the wall clock."""
    params = xyz_params(repo_root, srv, 1, 1, http={"timeout_s": 0.5, "retries": 0})  # type: ignore[arg-type]
    start = time.monotonic()
    with pytest.raises(DownloadError, match="produced no tiles"):
        run_download(params, tmp_path)
    assert time.monotonic() - start < 3.0
    [row] = manifest(tmp_path, failed=True)
    assert row["error"] == "timed out after 0.5 s (download.http.timeout_s, wall clock)"


@pytest.fixture()
def loopback_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1, which the client is made to trust (SSL_CERT_FILE)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_slow_drip_over_https_is_cut_at_the_wall_clock_limit(repo_root: Path, tmp_path: Path,
                                                             loopback_tls: ssl.SSLContext) -> None:
    """Over TLS too (the socket wrapped after connecting), a body dripping at 20 bytes/s ends at timeout_s."""
    with DripServer("body", tls=loopback_tls) as srv:
        _assert_cut_at_the_wall_clock_limit(repo_root, tmp_path, srv)


def test_archive_over_http_size_error_names_the_archive_key(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """An archive URL larger than download.archive.max_total_bytes is refused naming that key (not http.max_response_bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.jpg", bodies[0])
    blob = buf.getvalue()
    with TileServer([blob], content_type="application/zip") as srv:
        params = archive_params(repo_root, srv.url.format(z=0, x=0, y=0), sha256_bytes(blob), max_total_bytes=1000)
        with pytest.raises(DownloadError, match=rf"Content-Length {len(blob)} exceeds download\.archive\.max_total_bytes=1000$"):
            run_download(params, tmp_path / "out")


def test_redirect_loop_reason_is_one_line_in_the_manifest(repo_root: Path, tmp_path: Path) -> None:
    """A server redirecting a tile to itself is a one-line 'infinite loop' reason in the manifest's error cell."""

    class Loop(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(302)
            self.send_header("Location", self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Loop)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{{z}}/{{x}}/{{y}}"
        params = make_params(repo_root, source="xyz", http=FAST_HTTP, xyz={"url": url, "bbox": bbox_for(1, 1), "zoom": Z})
        with pytest.raises(DownloadError) as info:
            run_download(params, tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()
    [row] = manifest(tmp_path, failed=True)
    assert "infinite loop" in row["error"] and "\n" not in row["error"] and "\n" not in str(info.value)
    assert len((tmp_path / FAILED_MANIFEST).read_text().splitlines()) == 2


# --- issue 22: one pool of kept-alive connections instead of one connection per tile -------------


def test_tiles_reuse_kept_alive_connections(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """20 tiles fetched by 2 threads travel over at most 2 connections (urllib opened one per tile)."""
    with TileServer(bodies) as srv:
        summary = run_download(xyz_params(repo_root, srv, 5, 4, http={"concurrency": 2}), tmp_path)
    assert summary.counts["ok"] == 20 and sum(srv.hits.values()) == 20
    assert 1 <= srv.connections <= 2


def test_wall_clock_limit_cuts_a_reused_connection(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """A tile whose body drips over a connection kept alive from an earlier tile is still cut at timeout_s."""
    faults = {(Z, X0 + 1, Y0): ["drip"]}
    with TileServer(bodies, faults=faults) as srv:
        params = xyz_params(repo_root, srv, 2, 1, max_failed_fraction=1.0,
                            http={"concurrency": 1, "timeout_s": 0.5, "retries": 0})
        start = time.monotonic()
        summary = run_download(params, tmp_path)
        elapsed = time.monotonic() - start
        assert srv.connections == 1  # the dripping tile came over the first tile's connection
    assert summary.counts["ok"] == 1 and elapsed < 3.0
    assert by_source(tmp_path)[(Z, X0 + 1, Y0)]["error"] == "timed out after 0.5 s (download.http.timeout_s, wall clock)"


def test_redirects_are_followed_only_to_http(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """A relative redirect is followed (on the kept-alive connection); a redirect to ftp:// is a permanent failure."""
    faults = {(Z, X0, Y0): ["redirect"], (Z, X0 + 1, Y0): ["ftp"] * 9}
    with TileServer(bodies, faults=faults) as srv:
        run_download(xyz_params(repo_root, srv, 2, 1, max_failed_fraction=1.0, http={"concurrency": 1}), tmp_path)
    rows = by_source(tmp_path)
    assert rows[(Z, X0, Y0)]["status"] == "ok" and srv.hits[(Z, X0, Y0)] == 2
    assert (tmp_path / rows[(Z, X0, Y0)]["path"]).read_bytes() == srv.body_for(Z, X0, Y0)
    assert rows[(Z, X0 + 1, Y0)]["error"] == "refused redirect to non-http(s) URL 'ftp://example.org/tile.jpg'"
    assert srv.hits[(Z, X0 + 1, Y0)] == 1


def test_http_proxy_from_the_environment_is_used(repo_root: Path, tmp_path: Path, bodies: list[bytes],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """http_proxy is honoured as urllib did: tiles of an unresolvable host arrive through the proxy named there."""
    with TileServer(bodies) as proxy:
        for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", proxy.url.split("/{z}")[0])
        params = make_params(repo_root, source="xyz", http=FAST_HTTP,
                             xyz={"url": "http://tiles.example.invalid/{z}/{x}/{y}", "bbox": bbox_for(2, 1), "zoom": Z})
        summary = run_download(params, tmp_path)
    assert summary.counts["ok"] == 2 and sum(proxy.hits.values()) == 2


# --- issue 9: flat memory on big bboxes, archives streamed to disk; issue 11: failures on the bar --


def test_bounded_map_keeps_at_most_limit_in_flight() -> None:
    """bounded_map pulls work lazily: never more than ``limit`` items taken but not yet yielded, and every result arrives."""
    pulled = 0

    def items():
        nonlocal pulled
        for i in range(500):
            pulled += 1
            yield (i,)

    seen = []
    with ThreadPoolExecutor(4) as pool:
        for result in bounded_map(pool, lambda i: i * 2, items(), limit=6):
            assert pulled - len(seen) <= 6
            seen.append(result)
    assert sorted(seen) == [2 * i for i in range(500)]


@settings(max_examples=200, deadline=None)
@given(planned=st.integers(1, 500), max_failed=st.floats(0, 1), statuses=st.lists(st.sampled_from(
    ["ok", "resumed", "failed", "refused"]), max_size=500))
def test_failure_watch_stops_only_when_finish_would_fail(planned: int, max_failed: float, statuses: list[str]) -> None:
    """FailureWatch says 'exhausted' exactly when the rows so far already exceed max_failed of the planned tiles."""
    rows = [Row("", f"s{i}", "", 0, s, "e") for i, s in enumerate(statuses[:planned])]
    watch = FailureWatch(planned, max_failed)
    for row in rows:
        watch.add(row)
    bad = sum(r.status in ("failed", "refused") for r in rows)
    # Every unfetched tile succeeding would give bad / planned: finish's test on the best case.
    assert watch.exhausted == (bad / planned > max_failed)


def all_404(nx: int, ny: int) -> dict[tuple[int, int, int], list[str]]:
    """Faults making every tile of an nx x ny bbox answer 404 (a permanent failure)."""
    return {(Z, X0 + i, Y0 + j): ["404"] * 3 for i in range(nx) for j in range(ny)}


def test_all_failing_server_stops_early_with_failures_on_the_bar(repo_root: Path, tmp_path: Path, bodies: list[bytes],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A server failing everything: the bar shows the failure count and first error, and the run stops after ~5% of 400 tiles."""
    import satgan.download.sources as sources

    screen = io.StringIO()
    monkeypatch.setattr(sources, "tqdm", lambda *a, **k: tqdm(*a, **{**k, "disable": False, "file": screen, "mininterval": 0}))
    with TileServer(bodies, faults=all_404(20, 20)) as srv:
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"^stopped early: \d+ of 400 planned tiles failed, more than "
                                                r"download\.max_failed_fraction=0\.05 allows; \d+ not attempted; "
                                                r"first: .*HTTP 404.*; the rows of the tiles tried are in "):
            run_download(xyz_params(repo_root, srv, 20, 20, max_failed_fraction=0.05), tmp_path)
        elapsed = time.monotonic() - start
        requests = sum(srv.hits.values())
    # 21 failures end it; at most 2 x concurrency (4) more were already in flight.
    assert 21 <= requests <= 21 + 8 and elapsed < 10
    assert len(manifest(tmp_path, failed=True)) == requests
    assert re.search(r"failed \d+ \(first: .*HTTP 404 Not Found\)", screen.getvalue())


def zip_of_real_tiles(files: list[Path], megabytes: float) -> bytes:
    """A zip (stored) of real RSSCN7 tiles re-encoded as PNG, cycled until it reaches ``megabytes``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        k = 0
        while buf.tell() < megabytes * 1e6:
            png = io.BytesIO()
            with Image.open(files[k % len(files)]) as im:
                im.save(png, format="PNG")
            zf.writestr(f"t/{k:03d}.png", png.getvalue())
            k += 1
    return buf.getvalue()


@pytest.fixture(scope="module")
def real_zip(rsscn7_files: list[Path]) -> bytes:
    """A ~6 MB zip of real tiles: big enough that holding it in memory shows up in tracemalloc."""
    return zip_of_real_tiles(rsscn7_files[::20], 6)


def leftovers(out: Path) -> list[str]:
    """Files under out/.download (the staging area): temp files a failed archive fetch must not leave."""
    return sorted(p.name for p in (out / SCRATCH).rglob("*") if p.is_file()) if (out / SCRATCH).exists() else []


def test_archive_url_streams_to_disk_not_memory(repo_root: Path, tmp_path: Path, real_zip: bytes) -> None:
    """A real 6 MB zip over loopback HTTP is extracted whole while Python never holds more than a fraction of it."""
    with TileServer([real_zip], content_type="application/zip") as srv:
        params = archive_params(repo_root, srv.url.format(z=0, x=0, y=0), sha256_bytes(real_zip))
        tracemalloc.start()
        try:
            summary = run_download(params, tmp_path / "out")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    with zipfile.ZipFile(io.BytesIO(real_zip)) as zf:
        assert summary.counts["ok"] == len(zf.namelist())
        assert all((tmp_path / "out/tiles" / n).read_bytes() == zf.read(n) for n in zf.namelist())
    assert peak < len(real_zip) / 4, f"peak traced memory {peak} bytes for a {len(real_zip)}-byte archive"
    assert leftovers(tmp_path / "out") == []


def test_archive_url_sha256_mismatch_leaves_no_file(repo_root: Path, tmp_path: Path, real_zip: bytes) -> None:
    """A streamed archive whose sha256 differs from the pin stops the stage and leaves nothing in the staging area."""
    with TileServer([real_zip], content_type="application/zip") as srv:
        params = archive_params(repo_root, srv.url.format(z=0, x=0, y=0), "0" * 64)
        with pytest.raises(DownloadError, match=rf"sha256 is {sha256_bytes(real_zip)}, but download\.archive\.sha256 pins 0{{64}}"):
            run_download(params, tmp_path / "out")
    assert leftovers(tmp_path / "out") == []


class NoLengthHandler(http.server.BaseHTTPRequestHandler):
    """Sends ``body`` with no Content-Length (HTTP/1.0, ended by closing): the cap can only apply while streaming."""

    body = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_archive_url_without_length_is_capped_while_streaming(repo_root: Path, tmp_path: Path, real_zip: bytes) -> None:
    """A body with no Content-Length past download.archive.max_total_bytes is cut at the cap, naming that key; no temp file is left."""
    handler = type("H", (NoLengthHandler,), {"body": real_zip})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/a.zip"
        params = archive_params(repo_root, url, sha256_bytes(real_zip), max_total_bytes=1_000_000)
        with pytest.raises(DownloadError, match=r"body exceeds download\.archive\.max_total_bytes=1000000$"):
            run_download(params, tmp_path / "out")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert leftovers(tmp_path / "out") == []


def test_archive_url_wall_clock_timeout_leaves_no_file(repo_root: Path, tmp_path: Path) -> None:
    """An archive server dripping its body is cut at download.archive.timeout_s; the partial temp file is removed."""
    with DripServer("body", interval_s=0.01) as srv:
        params = archive_params(repo_root, srv.url.format(z=0, x=0, y=0), "0" * 64, timeout_s=0.5)
        params = dataclasses.replace(params, http=dataclasses.replace(params.http, retries=0))
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"timed out after 0\.5 s \(download\.archive\.timeout_s, wall clock\)"):
            run_download(params, tmp_path / "out")
    assert time.monotonic() - start < 3
    assert leftovers(tmp_path / "out") == []


# --- labels -------------------------------------------------------------------------------------


def class_tree(root: Path, rsscn7_files: list[Path], per_class: int = 2, classes: int = 2) -> Path:
    """A folder of ``classes`` rsscn7 class folders with ``per_class`` real JPEGs each."""
    for c in range(classes):
        for f in rsscn7_files[40 * c:40 * c + per_class]:
            dest = root / f.parent.name / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(f.read_bytes())
    return root


def test_labels_none_keeps_the_manifest_columns(repo_root: Path, tmp_path: Path, rsscn7_files: list[Path]) -> None:
    """With download.labels none the manifest has exactly its usual columns, no label."""
    src = class_tree(tmp_path / "src", rsscn7_files)
    run_download(make_params(repo_root, source="folder", folder={"path": str(src)}), tmp_path / "out")
    header = (tmp_path / "out" / MANIFEST).read_text().splitlines()[0]
    assert header == "path,source,sha256,bytes,status,error"


def test_folder_labels_are_the_first_folder(repo_root: Path, tmp_path: Path, rsscn7_files: list[Path]) -> None:
    """download.labels folder records each tile's first folder under the root as its label."""
    src = class_tree(tmp_path / "src", rsscn7_files)
    run_download(make_params(repo_root, source="folder", labels="folder", folder={"path": str(src)}), tmp_path / "out")
    rows = manifest(tmp_path / "out")
    assert len(rows) == 4
    assert {r["label"] for r in rows} == {"aGrass", "bField"}
    assert all(r["path"].split("/")[1] == r["label"] for r in rows)


def test_folder_labels_refuse_a_tile_outside_a_class_folder(repo_root: Path, tmp_path: Path,
                                                            rsscn7_files: list[Path]) -> None:
    """A tile directly under the root has no class folder: a refused row saying so, with no label."""
    src = class_tree(tmp_path / "src", rsscn7_files)
    (src / "loose.jpg").write_bytes(rsscn7_files[0].read_bytes())
    params = make_params(repo_root, source="folder", labels="folder", max_failed_fraction=0.5, folder={"path": str(src)})
    run_download(params, tmp_path / "out")
    loose = [r for r in manifest(tmp_path / "out") if r["source"].endswith("loose.jpg")]
    assert [(r["status"], r["label"], r["path"]) for r in loose] == [("refused", "", "")]
    assert "no class folder" in loose[0]["error"]
    assert not (tmp_path / "out" / "tiles" / "loose.jpg").exists()


def test_csv_labels_come_from_labels_csv(repo_root: Path, tmp_path: Path, rsscn7_files: list[Path]) -> None:
    """download.labels csv takes each tile's label from labels_csv; an unlisted tile is refused."""
    src = class_tree(tmp_path / "src", rsscn7_files)
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.jpg"))
    table = tmp_path / "labels.csv"
    table.write_text("path,label\n" + "".join(f"{f},class {i % 2}\n" for i, f in enumerate(files[:3])))
    params = make_params(repo_root, source="folder", labels="csv", labels_csv=str(table), max_failed_fraction=0.5,
                         folder={"path": str(src)})
    run_download(params, tmp_path / "out")
    got = {Path(r["source"]).relative_to(src).as_posix(): (r["status"], r["label"]) for r in manifest(tmp_path / "out")}
    assert got == {files[0]: ("ok", "class 0"), files[1]: ("ok", "class 1"), files[2]: ("ok", "class 0"),
                   files[3]: ("refused", "")}


def test_labels_csv_listing_a_path_twice_is_one_error_line(repo_root: Path, tmp_path: Path,
                                                           rsscn7_files: list[Path]) -> None:
    """A labels CSV naming one path twice stops the download naming the key, file and line."""
    src = class_tree(tmp_path / "src", rsscn7_files, per_class=1, classes=1)
    table = tmp_path / "labels.csv"
    table.write_text("path,label\naGrass/a.jpg,x\n./aGrass/a.jpg,y\n")
    params = make_params(repo_root, source="folder", labels="csv", labels_csv=str(table), folder={"path": str(src)})
    with pytest.raises(DataError, match=r"^download\.labels_csv: .*labels\.csv: line 3: 'aGrass/a\.jpg' is listed twice$"):
        run_download(params, tmp_path / "out")


def test_archive_folder_labels(repo_root: Path, tmp_path: Path, bodies: list[bytes]) -> None:
    """Archive members take their label from their first folder too."""
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("forest/a.jpg", bodies[0])
        zf.writestr("./river/b.jpg", bodies[1])
    params = dataclasses.replace(archive_params(repo_root, path, sha256_file(path)), labels="folder")
    run_download(params, tmp_path / "out")
    assert {r["path"]: r["label"] for r in manifest(tmp_path / "out")} == {"tiles/forest/a.jpg": "forest",
                                                                          "tiles/river/b.jpg": "river"}


@pytest.mark.parametrize("over, key", [({"source": "sample", "labels": "folder"}, "download.labels"),
                                       ({"source": "folder", "folder": {"path": "x"}, "labels": "csv"},
                                        "download.labels_csv")])
def test_label_params_are_checked(repo_root: Path, over: dict[str, Any], key: str) -> None:
    """Labels on a source without them, or csv labels without a CSV, are params errors naming the key."""
    with pytest.raises(ParamsError, match=rf"^params\.yaml: {re.escape(key)}: expected "):
        make_params(repo_root, **over)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_labels_csv_with_a_utf8_bom_is_read(tmp_path: Path, newline: str) -> None:
    """A labels CSV saved by Excel ("CSV UTF-8": a byte-order mark, CRLF lines) reads its header and rows."""
    from satgan.download.labels import read_labels_csv

    table = tmp_path / "labels.csv"
    table.write_bytes(("\ufeffpath,label" + newline + "aGrass/a.jpg,Grass" + newline).encode("utf-8"))
    assert read_labels_csv(table) == {"aGrass/a.jpg": "Grass"}
