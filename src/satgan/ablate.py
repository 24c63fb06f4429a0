"""Ablate every default-on GAN hack as a queued DVC experiment: ``python -m satgan.ablate``.

Experiments are ``dvc exp run -S`` variations of params.yaml, never copied scripts. This
queues one experiment per hack that is on in params.yaml (turning that one hack off),
runs the queue, and prints ``dvc exp show`` with the evaluation columns side by side. The
hacks and the key that switches each come from :data:`satgan.train.registry.HACKS`; whether
one is on is read from the typed ``train`` section, so a params error names its key.

    python -m satgan.ablate              # queue + run + show
    python -m satgan.ablate --dry-run    # print the dvc commands only
    python -m satgan.ablate -S train.iterations=200   # extra overrides for every run
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
from pathlib import Path

from satgan.cli import run_main
from satgan.errors import SatganError
from satgan.params import load_section
from satgan.train import TrainParams
from satgan.train.registry import Hack, hacks_on


def ablated_hacks(params_path: Path) -> list[Hack]:
    """The hacks switched on in ``params_path``'s ``train`` section, in registry order (one run each)."""
    return hacks_on(load_section("train", TrainParams, params_path).hacks)


def ablation_commands(params_path: Path, extra: list[str]) -> list[list[str]]:
    """The ``dvc exp run --queue`` commands, one per hack that is on, then the run of the queue."""
    sets = [a for s in extra for a in ("-S", s)]
    cmds = []
    for hack in ablated_hacks(params_path):
        name = "no-" + hack.name.replace("_", "-")
        cmds.append(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"{hack.params_key}=false", *sets])
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
