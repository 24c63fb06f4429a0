"""`make gpu-check`: prove the GPU path on this CUDA machine in one go, and print one table.

1. the tests marked ``cuda`` (tests/test_cuda.py: CUDA graph vs eager, bf16 + fused Adam,
   streaming with a tiny data budget, resume on CUDA, the default hacks inside the graph);
   a skipped test counts as a failure here, so none passes silently;
2. a tiny end-to-end ``dvc repro`` with ``train.device: cuda`` in a throwaway copy of the repo
   (tests/pipeline_helpers.py's TINY config);
3. bench/train_bench.py (satgan's trainer vs the canonical pytorch/examples DCGAN loop) at
   batch 64, 128 and 512, 64x64 tiles, ngf = ndf = 64, with ``train.deterministic`` off and on.

Every part runs even when an earlier one fails; the exit status is 1 if any failed. The table
(device name, date, software versions) goes to stdout and, as markdown, to ``--out``, ready
for docs/benchmarks.md. Without CUDA it exits 2 with one line saying so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BATCHES = (64, 128, 512)
BENCH_LINE = re.compile(r"^\|\s*(example|hacks off|default)\s*\|\s*([0-9.]+)\s*\|")  # train_bench's wall-clock table
BENCH_NAMES = {"example": "example", "hacks off": "satgan-off", "default": "satgan"}
# train_bench's warm-up must cover the fast path's own: 3 graph warm-up steps + 3 checked steps
BENCH_WARMUP = 10


@dataclass
class Check:
    """One part of the gpu-check: what, whether it passed, and the detail for the table."""

    name: str
    ok: bool
    detail: str


@dataclass
class BenchRow:
    """train_bench figures (img/s) at one batch size; ``deterministic`` is satgan's default hacks with it on."""

    batch: int
    example: float | None = None
    hacks_off: float | None = None
    default: float | None = None
    deterministic: float | None = None
    errors: list[str] = field(default_factory=list)


def parse_bench(stdout: str) -> dict[str, float]:
    """img/s per configuration (``example``, ``satgan-off``, ``satgan``) from train_bench's output."""
    found = {}
    for line in stdout.splitlines():
        m = BENCH_LINE.match(line.strip())
        if m:
            found.setdefault(BENCH_NAMES[m.group(1)], float(m.group(2)))  # the wall-clock table comes first
    return found


def bench_command(batch: int, deterministic: bool, steps: int, device: str = "cuda", size: int = 64, ngf: int = 64,
                  images: int = 2048) -> list[str]:
    """train_bench.py under ``train.deterministic`` on or off, set before any CUDA work (as the train stage does)."""
    argv = ["bench/train_bench.py", "--size", str(size), "--ngf", str(ngf), "--batch", str(batch), "--steps", str(steps),
            "--warmup", str(BENCH_WARMUP), "--images", str(images), "--device", device]
    code = ("import runpy, sys, torch; from satgan.train.runtime import determinism; "
            f"sys.argv = {argv!r}; "
            f"ctx = determinism({deterministic!r}, torch.device({device!r})); ctx.__enter__(); "
            "runpy.run_path('bench/train_bench.py', run_name='__main__')")
    return [sys.executable, "-c", code]


def _fmt(v: float | None) -> str:
    return f"{v:,.0f}" if v is not None else "failed"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def markdown(device: str, date: str, versions: str, checks: list[Check], rows: list[BenchRow]) -> str:
    """The gpu-check report: the checks, then one bench table (img/s; higher is better)."""
    lines = [f"### `make gpu-check` on {device}, {date}", "", versions, "",
             "| check | result | detail |", "| --- | --- | --- |"]
    lines += [f"| {c.name} | {'ok' if c.ok else 'FAILED'} | {c.detail} |" for c in checks]
    lines += ["", "bench/train_bench.py, 64x64x3, ngf = ndf = 64, img/s (satgan: params.yaml's default hacks):", "",
              "| batch | example loop | satgan, hacks off | satgan, deterministic off | satgan, deterministic on "
              "| default / example | hacks cost (det. off) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cost = f"{100 * (1 - r.default / r.hacks_off):.0f}%" if r.default and r.hacks_off else "-"
        lines.append(f"| {r.batch} | {_fmt(r.example)} | {_fmt(r.hacks_off)} | {_fmt(r.default)} | {_fmt(r.deterministic)} "
                     f"| {_ratio(r.deterministic, r.example)} | {cost} |")
    errors = [f"- batch {r.batch}: {e}" for r in rows for e in r.errors]
    return "\n".join(lines + ([""] + errors if errors else [])) + "\n"


def _tail(text: str, n: int = 2000) -> str:
    return text[-n:] if len(text) > n else text


def run_cuda_tests(tmp: Path) -> Check:
    """pytest -m cuda; ok only when every test ran and passed (a skip on a GPU machine is a failure)."""
    junit = tmp / "cuda-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-m", "cuda", "-n", "0", "-ra", "-p", "no:cacheprovider",
           f"--junitxml={junit}"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    print(_tail(res.stdout, 4000), file=sys.stderr)
    if not junit.is_file():
        return Check("tests marked cuda", False, f"pytest exited {res.returncode} without a report")
    suite = ET.parse(junit).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    ok = res.returncode == 0 and counts["tests"] > 0 and passed == counts["tests"]
    return Check("tests marked cuda (tests/test_cuda.py)", ok,
                 f"{passed} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped")


def run_tiny_repro(tmp: Path) -> Check:
    """`dvc repro` of the tiny config with train.device: cuda in a throwaway copy; the card must say cuda."""
    sys.path.insert(0, str(REPO / "tests"))
    from pipeline_helpers import TINY, make_repo_copy, run, stages_run

    name = "tiny dvc repro, train.device: cuda"
    repo = make_repo_copy(tmp / "repo", {**TINY, "train.device": "cuda"})
    res = run(["dvc", "repro"], repo, check=False, timeout=1800)
    if res.returncode != 0:
        print(_tail(res.stdout + res.stderr, 4000), file=sys.stderr)
        return Check(name, False, f"dvc repro exited {res.returncode}")
    card = json.loads((repo / "data" / "model" / "model.json").read_text())
    ok = card["device"] == "cuda" and card["step"] == TINY["train.iterations"]
    return Check(name, ok, f"{len(stages_run(res.stdout))} stages ran; model.json: device {card['device']}, "
                           f"step {card['step']}, fast_path {card['fast_path']}")


def run_bench(steps: int) -> list[BenchRow]:
    rows = []
    for batch in BATCHES:
        row = BenchRow(batch)
        for deterministic in (False, True):
            res = subprocess.run(bench_command(batch, deterministic, steps), cwd=REPO, capture_output=True, text=True)
            got = parse_bench(res.stdout)
            print(f"gpu-check: batch {batch}, deterministic {deterministic}: {got or _tail(res.stderr, 500)}", file=sys.stderr)
            if res.returncode != 0 or "satgan" not in got:
                row.errors.append(f"train_bench (deterministic {deterministic}) exited {res.returncode}: "
                                  f"{' '.join(_tail(res.stderr, 300).split())}")
                continue
            if deterministic:
                row.deterministic = got["satgan"]
            else:
                row.example, row.hacks_off, row.default = got.get("example"), got.get("satgan-off"), got["satgan"]
        rows.append(row)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "gpu-check.md", help="markdown report (default: ./gpu-check.md)")
    ap.add_argument("--steps", type=int, default=100, help="timed steps per train_bench run")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine (torch.cuda.is_available() is False): nothing to check",
              file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0)
    versions = (f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
                f"driver/GPUs: {torch.cuda.device_count()} x {device}")
    date = datetime.date.today().isoformat()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        checks = [run_cuda_tests(Path(tmp)), run_tiny_repro(Path(tmp))]
    rows = run_bench(args.steps)
    checks.append(Check("train_bench at batch 64/128/512", all(not r.errors for r in rows),
                        "; ".join(e for r in rows for e in r.errors) or "all ran"))
    report = markdown(device, date, versions, checks, rows)
    print(report)
    args.out.write_text(report)
    print(f"gpu-check: wrote {args.out}", file=sys.stderr)
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
