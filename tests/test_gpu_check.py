"""Tests for bench/gpu_check.py on a CPU: its refusal without CUDA, --help, and the parsing and table it reports with."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from train_helpers import REPO

SCRIPT = REPO / "bench" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up there
spec.loader.exec_module(gpu_check)


def test_help_runs_anywhere():
    """--help describes the check and exits 0, CUDA or not."""
    res = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "gpu-check" in res.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the refusal cannot happen here")
def test_without_cuda_exits_2_with_one_line(tmp_path):
    """No CUDA: exit status 2, one line on stderr saying so, and no report written."""
    res = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "r.md")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "no CUDA device" in res.stderr
    assert not (tmp_path / "r.md").exists()


@pytest.mark.slow
def test_parses_the_real_train_bench_output():
    """The bench command gpu-check builds runs train_bench (here on a CPU, tiny) and its output parses to three figures."""
    cmd = gpu_check.bench_command(4, True, 2, device="cpu", size=32, ngf=4, images=16)
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    got = gpu_check.parse_bench(res.stdout)
    assert set(got) == {"example", "satgan-off", "satgan"} and all(v > 0 for v in got.values())


def test_markdown_report_has_device_date_checks_and_one_row_per_batch():
    """The report names the device and date, lists each check and each batch, and marks a failed run."""
    checks = [gpu_check.Check("tests marked cuda", True, "18 passed"), gpu_check.Check("tiny dvc repro", False, "exit 1")]
    rows = [gpu_check.BenchRow(64, 3300.0, 30000.0, 26000.0, 25000.0),
            gpu_check.BenchRow(128, None, None, None, None, ["train_bench exited 1: OOM"])]
    md = gpu_check.markdown("NVIDIA H100", "2026-11-25", "torch x", checks, rows)
    assert "NVIDIA H100, 2026-11-25" in md and "| tests marked cuda | ok | 18 passed |" in md
    assert "| tiny dvc repro | FAILED | exit 1 |" in md
    assert "| 64 | 3,300 | 30,000 | 26,000 | 25,000 | 7.58x | 13% |" in md
    assert "| 128 | failed | failed | failed | failed | - | - |" in md and "- batch 128: train_bench exited 1: OOM" in md
