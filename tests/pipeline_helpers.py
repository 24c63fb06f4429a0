"""Helpers for end-to-end tests: a throwaway copy of this repo with tiny params, run with real dvc."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The smallest settings that still exercise every stage for real: a few dozen real
# Sentinel-2 tiles, tiny nets, a few training iterations. Each key must already exist
# in params.yaml (set_dotted refuses new keys), so this list cannot drift silently.
TINY: dict[str, Any] = {
    "download.sample.tile_size": 128,
    "download.sample.stride": 256,
    "prepare.image_size": 32,
    "train.iterations": 6,
    "train.batch_size": 16,
    "train.checkpoint_every": 3,
    "train.log_every": 3,
    "train.sample_every": 3,
    "train.ngf": 8,
    "train.ndf": 8,
    "generate.n_samples": 24,
    "generate.grid_tiles": 16,
    "generate.interp_rows": 2,
    "generate.interp_steps": 5,
    "evaluate.turing.n_real": 4,
    "evaluate.turing.n_fake": 4,
    "evaluate.judge.epochs": 3,
}


def env() -> dict[str, str]:
    """The environment for subprocesses: this venv's python, dvc and satgan first on PATH."""
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e['PATH']}"
    e["PYTHONUNBUFFERED"] = "1"
    e.pop("PYTHONPATH", None)
    return e


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` with captured text output; on failure show both streams."""
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}\n{proc.stdout}\n{proc.stderr}")
    return proc


def set_dotted(params: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested params mapping; the key must already exist."""
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    assert last in node, f"params.yaml has no key {key}"
    node[last] = value


def edit_params(repo: Path, changes: dict[str, Any]) -> None:
    """Rewrite ``repo``/params.yaml with dotted-key ``changes`` applied."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        set_dotted(params, key, value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo_copy(dest: Path, changes: dict[str, Any]) -> Path:
    """Copy the committed + untracked-not-ignored files of this repo to ``dest`` as a fresh git repo."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    edit_params(dest, changes)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], dest)
    return dest


def commit_all(repo: Path, message: str) -> None:
    """Commit everything (dvc.lock, params) in ``repo``."""
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def stages_run(dvc_output: str) -> list[str]:
    """Names of the stages `dvc repro` actually ran, from its log."""
    return re.findall(r"Running stage '([\w-]+)'", dvc_output)


def in_a_terminal(cmd: list[str], cwd: Path, columns: int) -> str:
    """``cmd``'s output as a user's terminal of ``columns`` columns gets it (a pseudo-terminal), escape codes removed.

    DVC pages a table in a terminal (``less -S``: long lines chopped at the screen's edge,
    scrolled with the arrow keys); DVC_PAGER=cat prints the same full-width lines instead, so
    their first ``columns`` characters are what the first screen shows.
    """
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(cmd, cwd=cwd, env={**env(), "DVC_PAGER": "cat", "COLUMNS": str(columns), "TERM": "xterm"},
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
