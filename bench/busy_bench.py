"""Training throughput on a busy machine: OpenMP's wait policies and thread counts, idle and under a bounded load.

Each configuration trains satgan's default recipe (params.yaml's train section at the bench's
sizes, instance noise decayed) in a process of its own, because OpenMP reads its wait policy
once, when torch loads it (satgan.openmp). Configurations:

- ``satgan default``: the shipped setting (2 threads, the wait policy satgan.openmp chooses:
  ``GOMP_SPINCOUNT=100000``, spin, then sleep; threads bound one per core, as the train stage
  binds them: ``satgan.openmp.bind_threads``);
- ``satgan default (again)``: the null control, the same configuration timed twice: how far
  apart it lands from the first shows the noise of this command's figures;
- ``satgan default, unbound``: the same without the binding (``OMP_PROC_BIND=false``); this and
  OpenMP's default leave threads where the scheduler puts them;
- ``spin 10k, bound``: the previous default's shorter spin (``GOMP_SPINCOUNT=10000``), bound;
- ``OpenMP default``: 2 threads with libgomp's own default (``GOMP_SPINCOUNT=300000``, what
  it uses when nothing is set), unbound: what satgan did first, and the idle reference;
- ``1 thread``: one thread (no barriers to wait at);
- ``2 processes (DDP)``: not a setting of today's default but a candidate mechanism: the same
  recipe as ``train.nproc: 2`` with half the batch per process (so the same 64 images a step, but
  BatchNorm's statistics over 32), one thread each, under torchrun (gloo): the processes meet
  only at DDP's gradient all-reduces, a few per step, where OpenMP's threads meet at every
  parallel op.

Load: ``--busy`` processes (default 2, as many as this machine's 2 cores) that spin in pure
Python, each started with a deadline it stops itself at, and killed by this script at the
end of the loaded phase, so nothing outlives the bench. Each configuration is timed in
``--rounds`` interleaved rounds per phase (idle first, then loaded) and each figure is the
median img/s. The two ratios the issue asks for (issue 20, part 1) are printed at the end:
under load, satgan default / 1 thread (goal >= 0.8); idle, satgan default / OpenMP default
(goal >= 0.97). The load from other work on a shared machine adds to the bench's own.

    python bench/busy_bench.py                    # 64 px, ngf 16, batch 64, 2 busy processes
    python bench/busy_bench.py --rounds 1 --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from satgan.openmp import PLACEMENT_VARIABLES, POLICY_VARIABLES

REPO = Path(__file__).resolve().parents[1]

# name: (threads, environment overrides, processes); a set OpenMP variable makes satgan.openmp keep it
# (OMP_PROC_BIND=false: threads left where the scheduler puts them, as before satgan bound them).
CONFIGS: dict[str, tuple[int, dict[str, str], int]] = {
    "satgan default": (2, {}, 1),
    "satgan default (again)": (2, {}, 1),  # the null control: the same configuration timed twice
    "satgan default, unbound": (2, {"OMP_PROC_BIND": "false"}, 1),
    "spin 10k, bound": (2, {"GOMP_SPINCOUNT": "10000"}, 1),
    "OpenMP default": (2, {"GOMP_SPINCOUNT": "300000", "OMP_PROC_BIND": "false"}, 1),
    "1 thread": (1, {}, 1),
    "2 processes (DDP)": (1, {}, 2),
}


def child(args: argparse.Namespace) -> None:
    """In a fresh process: train the default recipe for ``--steps`` after ``--warmup``; print one JSON line."""
    import satgan.openmp  # first: it sets the wait policy before torch loads OpenMP

    satgan.openmp.bind_process(args.threads)  # before torch loads: bound one per core as the train stage binds it

    # isort: split
    import torch
    import yaml

    from satgan.params import from_mapping
    from satgan.train import Trainer, TrainParams, model_config
    from satgan.train.runtime import dist_from_env, process_group

    sys.path.insert(0, str(REPO / "bench"))
    from train_bench import smooth_fields

    doc = yaml.safe_load(args.params.read_text())["train"]
    doc.update(batch_size=args.batch, ngf=args.ngf, ndf=args.ngf, device="cpu", threads=args.threads)
    p = from_mapping(TrainParams, doc, "train")
    torch.set_num_threads(args.threads)
    arr = smooth_fields(args.images, args.size)
    dist = dist_from_env()  # a DDP configuration runs under torchrun
    with process_group(torch.device("cpu"), dist):
        trainer = Trainer(p, model_config(p, args.size, 3), arr, torch.device("cpu"), dist)
        start = p.hacks.instance_noise.decay_iters if p.hacks.instance_noise.enabled else 0
        trainer.progress.load_state_dict({"step": start})
        for _ in range(args.warmup):
            trainer.run_step()
        t0 = time.perf_counter()
        out: dict[str, torch.Tensor] = {}
        for _ in range(args.steps):
            out = trainer.run_step()
        {k: float(v) for k, v in out.items()}
        wall = time.perf_counter() - t0
    if dist.main:  # images of every process: the batch is per process
        print(json.dumps({"img_s": args.steps * args.batch * dist.world / wall, "policy": satgan.openmp.wait_policy(),
                          "threads": torch.get_num_threads(), "processes": dist.world}), flush=True)


def run_config(name: str, args: argparse.Namespace) -> dict[str, object]:
    """One configuration in a child process with its thread count and environment."""
    from satgan.train.runtime import torchrun_command  # here, not at the top: it loads torch, which the child
    # must not have loaded before it binds its threads

    threads, env_over, procs = CONFIGS[name]
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARIABLES + PLACEMENT_VARIABLES}
    env.update(env_over, PYTHONPATH=str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", ""))
    # several processes: torchrun, as train.nproc launches them, each with its share of the batch
    launcher = torchrun_command(procs, [__file__]) if procs > 1 else [sys.executable, __file__]
    cmd = [*launcher, "--child", "--threads", str(threads), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--size", str(args.size), "--ngf", str(args.ngf),
           "--batch", str(args.batch // procs), "--images", str(args.images), "--params", str(args.params)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(f"busy_bench: {name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_load(n: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """``n`` processes that spin in Python until ``seconds`` from now (each stops itself then)."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(n)]


def stop_load(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def phase(label: str, args: argparse.Namespace) -> dict[str, float]:
    """Median img/s of every configuration over interleaved rounds."""
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for r in range(args.rounds):
        for name in CONFIGS:
            got = run_config(name, args)
            rates[name].append(float(got["img_s"]))  # type: ignore[arg-type]
            print(f"{label} round {r + 1}/{args.rounds}: {name}: {got['img_s']:.1f} img/s "
                  f"({got['processes']} x {got['threads']} threads; {got['policy']})", flush=True)
    return {name: statistics.median(v) for name, v in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=64, choices=(32, 64, 128))
    ap.add_argument("--ngf", type=int, default=16, help="ngf = ndf")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=24, help="timed steps per configuration per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per phase; figures are medians")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--busy", type=int, default=2, help="busy processes started for the loaded phase")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds one configuration may take")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--skip-idle", action="store_true", help="time the loaded phase only")
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    print(f"{args.size}x{args.size}x3, ngf=ndf={args.ngf}, batch {args.batch}, {args.steps} steps x {args.rounds} "
          f"rounds per phase, {os.cpu_count()} CPUs, load: {args.busy} busy processes", flush=True)
    idle = None if args.skip_idle else phase("idle", args)
    # Bounded: every configuration of every round may take --timeout at most.
    procs = start_load(args.busy, args.timeout * len(CONFIGS) * args.rounds)
    try:
        loaded = phase("loaded", args)
    finally:
        stop_load(procs)

    print("\n| configuration | idle img/s | loaded img/s | loaded vs 1 thread loaded |")
    print("| --- | --- | --- | --- |")
    for name in CONFIGS:
        idle_s = f"{idle[name]:,.1f}" if idle else "-"
        print(f"| {name} | {idle_s} | {loaded[name]:,.1f} | {loaded[name] / loaded['1 thread']:.2f}x |")
    print(f"\nloaded: satgan default / 1 thread = {loaded['satgan default'] / loaded['1 thread']:.2f}x (goal >= 0.8)")
    if idle:
        print(f"idle: satgan default / OpenMP default = {idle['satgan default'] / idle['OpenMP default']:.2f}x "
              "(goal >= 0.97)")
    twice = [loaded] + ([idle] if idle else [])
    print("null control: satgan default timed twice differs by "
          + ", ".join(f"{abs(p['satgan default (again)'] / p['satgan default'] - 1):.1%} {label}"
                      for p, label in zip(twice, ("loaded", "idle"))))
    ddp = "2 processes (DDP)"
    print(f"candidate: {ddp} / 1 thread, loaded = {loaded[ddp] / loaded['1 thread']:.2f}x"
          + (f"; idle vs OpenMP default = {idle[ddp] / idle['OpenMP default']:.2f}x" if idle else ""))


if __name__ == "__main__":
    main()
