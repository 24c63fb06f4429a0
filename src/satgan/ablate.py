"""Ablate every default-on GAN hack as a queued DVC experiment: ``python -m satgan.ablate``.

Experiments are ``dvc exp run -S`` variations of params.yaml, never copied scripts. This
queues one experiment per hack that is on in params.yaml (turning that one hack off),
runs the queue, and prints ``dvc exp show`` with the evaluation columns side by side.

    python -m satgan.ablate              # queue + run + show
    python -m satgan.ablate --dry-run    # print the dvc commands only
    python -m satgan.ablate -S train.iterations=200   # extra overrides for every run
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
from pathlib import Path
from typing import Any

from satgan.cli import run_main
from satgan.errors import SatganError
from satgan.params import read_params_file

def default_on_hacks(params: dict[str, Any]) -> list[str]:
    """Dotted params keys that switch off each hack that is on, e.g. ``train.hacks.ema.enabled``.

    A hack is either a boolean switch (``train.hacks.x: true``) or a mapping with an
    ``enabled`` boolean (``train.hacks.x.enabled: true``).
    """
    try:
        hacks = params["train"]["hacks"]
    except (KeyError, TypeError):
        raise SatganError("params.yaml: train.hacks: missing section (nothing to ablate)") from None
    keys = []
    for name, value in hacks.items():
        if value is True:
            keys.append(f"train.hacks.{name}")
        elif isinstance(value, dict) and "enabled" in value and value["enabled"] is True:
            keys.append(f"train.hacks.{name}.enabled")
    return keys


def ablation_commands(params_path: Path, extra: list[str]) -> list[list[str]]:
    """The ``dvc exp run --queue`` commands, one per default-on hack, then the run of the queue."""
    sets = [a for s in extra for a in ("-S", s)]
    cmds = []
    for key in default_on_hacks(read_params_file(params_path)):
        name = "no-" + key.removeprefix("train.hacks.").removesuffix(".enabled").replace("_", "-")
        cmds.append(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"{key}=false", *sets])
    cmds.append(["dvc", "exp", "run", "--queue", "-n", "baseline", *sets])
    cmds.append(["dvc", "exp", "run", "--run-all", "--jobs", "1"])
    cmds.append(["dvc", "exp", "show", "--md", "--drop", "Created|State|Executor"])
    return cmds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m satgan.ablate", description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("-S", "--set", action="append", default=[], help="extra param override for every run")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    for cmd in ablation_commands(args.params, args.set):
        print("$", shlex.join(cmd), flush=True)
        if not args.dry_run:
            proc = subprocess.run(cmd)
            if proc.returncode != 0:
                raise SatganError(f"`{shlex.join(cmd)}` failed with exit code {proc.returncode}")


if __name__ == "__main__":
    run_main(main, "satgan.ablate")
