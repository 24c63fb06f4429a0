"""Tests for the `satgan` command: every subcommand's --help, one real call each, lazy imports, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from satgan import cli
from satgan.evaluate.turing import ANSWERS_FORMAT, write_turing_test
from test_evaluate_summary import METRICS as SUMMARY_METRICS
from tiles import load_tiles

SATGAN = Path(sys.executable).parent / "satgan"
HELP_CALLS = [["sample"], ["summary"], ["quiz"], ["quiz", "score"], ["quiz", "make"], ["report"], ["ablate"]]


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    """cli.main(args) in-process -> (exit code, stdout, stderr)."""
    try:
        cli.main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def params(tmp_path, repo_root) -> Path:
    """The repository's params.yaml with every path pointing into tmp_path."""
    doc = yaml.safe_load((repo_root / "params.yaml").read_text())
    doc["paths"] = {k: str(tmp_path / k) for k in doc["paths"]}
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_top_level_help_lists_every_command(capsys):
    """`satgan --help` exits 0 and names each subcommand."""
    code, out, _ = _run(["--help"], capsys)
    assert code == 0 and all(f"  {name} " in out for name in cli.COMMANDS)


@pytest.mark.parametrize("args", HELP_CALLS, ids=" ".join)
def test_each_subcommand_has_help(args, capsys):
    """`satgan <command> --help` exits 0 with a usage line."""
    code, out, _ = _run([*args, "--help"], capsys)
    assert code == 0 and out.startswith("usage: ")


def test_unknown_command_is_a_usage_error(capsys):
    """An unknown subcommand exits 2 and lists the known ones."""
    code, _, err = _run(["trian"], capsys)
    assert code == 2 and "unknown command 'trian'" in err and "sample" in err


def test_console_script_is_installed_and_lazy():
    """The installed `satgan` script runs, and `satgan --help` imports neither torch nor the subcommand modules."""
    proc = subprocess.run([str(SATGAN), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "quiz" in proc.stdout
    probe = ("import sys, contextlib, io\nfrom satgan import cli\nwith contextlib.redirect_stdout(io.StringIO()):\n"
             "    cli.main(['--help'])\nprint(sorted(m for m in sys.modules if m == 'torch' or m in "
             "('satgan.sample', 'satgan.evaluate.turing', 'satgan.evaluate.report', 'satgan.evaluate.summary', 'satgan.ablate')))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_sample_writes_a_grid(tmp_path, capsys):
    """`satgan sample` samples a saved model into a PNG grid."""
    import torch

    from satgan.model import ModelConfig, build_discriminator, build_generator
    from satgan.modelio import save_model

    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4)
    torch.manual_seed(0)
    save_model(tmp_path / "model", build_generator(cfg), build_discriminator(cfg), cfg, params_hash="p", data_hash="d", step=1)
    code, out, err = _run(["sample", "--model", str(tmp_path / "model"), "--n", "4", "--out", str(tmp_path / "g.png")], capsys)
    assert code == 0, err
    assert (tmp_path / "g.png").is_file() and "wrote 4 tiles" in out


def test_summary_prints_the_table(params, tmp_path, capsys):
    """`satgan summary --params` prints the evaluation table from the eval folder."""
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(SUMMARY_METRICS))
    (tmp_path / "eval" / "fid_kid.json").write_text(json.dumps({"fid": "not computed", "kid": "not computed", "reason": "r"}))
    code, out, err = _run(["summary", "--params", str(params)], capsys)
    assert code == 0, err
    assert "judge accuracy" in out and str(tmp_path / "eval" / "quiz.html") in out


def test_quiz_score_and_its_errors(tmp_path, rsscn7_files, capsys):
    """`satgan quiz score` prints both error splits; a missing key exits 2 with one 'satgan quiz: error:' line."""
    tiles = load_tiles(rsscn7_files[:8])
    paths = write_turing_test(tiles[:4], tiles[4:], tmp_path, n_real=2, n_fake=2, nrow=2, seed=0)
    key = json.loads(paths["key"].read_text())
    ans = tmp_path / "a.json"
    ans.write_text(json.dumps({"format": ANSWERS_FORMAT, "quiz_id": key["quiz_id"],
                               "protocol": {"mode": "single", "exposure_ms": None},
                               "answers": {t["id"]: t["label"] for t in key["tiles"]}}))
    code, out, err = _run(["quiz", "score", str(ans), "--key", str(paths["key"]), "--bootstrap", "100"], capsys)
    assert code == 0, err
    assert "error on fakes" in out and "error on reals" in out
    code, _, err = _run(["quiz", "score", str(ans), "--key", str(tmp_path / "nope.json")], capsys)
    assert code == 2 and err.startswith("satgan quiz: error: ") and err.count("\n") == 1


def test_report_builds_the_page(params, tmp_path, capsys):
    """`satgan report --params --out` writes report.html there (never into the eval folder), even before any run."""
    code, out, err = _run(["report", "--params", str(params), "--out", str(tmp_path / "page")], capsys)
    assert code == 0, err
    assert (tmp_path / "page" / "report.html").is_file() and (tmp_path / "page" / "headline.json").is_file()
    assert not (tmp_path / "eval" / "report.html").exists() and str(tmp_path / "page" / "report.html") in out


def test_ablate_dry_run_prints_the_queue(repo_root, capsys):
    """`satgan ablate --dry-run` prints one queued `dvc exp run` per default-on hack and runs nothing."""
    code, out, err = _run(["ablate", "--dry-run", "--params", str(repo_root / "params.yaml")], capsys)
    assert code == 0, err
    assert out.count("dvc exp run --queue") >= 2 and "--run-all" in out


def test_broken_pipe_ends_quietly(tmp_path):
    """Output piped into `head` that stops reading: no BrokenPipeError traceback, exit 141 (SIGPIPE's)."""
    script = ("from satgan.cli import run_main\n"
              "def main():\n"
              "    for i in range(200000):\n"
              "        print('line', i)\n"
              "run_main(main, 'satgan test')\n")
    proc = subprocess.run(f"{sys.executable} -c \"{script}\" | head -1; echo \"${{PIPESTATUS[0]}}\" >&2",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    assert proc.stdout == "line 0\n"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "141"
