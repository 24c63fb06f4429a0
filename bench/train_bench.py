"""Train-step throughput: satgan's trainer vs the canonical PyTorch DCGAN example, and what each hack costs.

Same nets (satgan's build_generator/build_discriminator; the example gets D + Sigmoid and
BCELoss as in pytorch/examples dcgan/main.py), same images, same batch size, one process, one
thread count for all. Configurations:

- ``example``:   pytorch/examples' loop: images read as PNG files through a DataLoader with 2
                 workers, fp32, host->device copy per step, Sigmoid + BCE, ``.item()`` on both
                 losses every step;
- ``bare``:      the leanest loop on the same nets: resident data, the default's precision and layout
                 (channels_last on a CPU, under bf16 autocast where bf16 is native), BCE on logits, no
                 host read per step: what the hardware gives without any of satgan's machinery;
- ``default``:   satgan's Trainer with params.yaml as shipped (on a CPU with native bf16,
                 ``cpu_bf16: auto`` trains in bf16 + channels_last); ``default fp32`` forces fp32;
- ``hacks off``: every hack off except the ones the example does too (``in_example`` in
                 satgan.train.registry: N(0, 1) latents, separate real/fake batches, the
                 non-saturating loss); ``hacks off fp32`` forces fp32;
- ``default - X``: the default without hack X, for each default-on hack the example does not
                 have: X's cost is ``1 - img/s(default) / img/s(default - X)``;
- ``default (again)``: the default, built and timed a second time: a null control. The two
                 should agree; the bench says when they differ by more than 5% (the machine was
                 too noisy for differences of that size);
- ``default, DiffAugment eager``: the default with DiffAugment's ops run eagerly (as before
                 issue 20) instead of compiled by inductor;
- ``default + X``: the default plus a candidate (DiffAugment, ADA, spectral norm, R1, hinge,
                 PixelShuffle): its cost against the default, for comparisons at equal compute.

Fair timing on a shared machine: every configuration is built first, then timed in many
short interleaved rounds (each round times ``--steps`` steps of every configuration in turn),
so a slow spell of the machine falls on all of them; each figure is the median over
``--rounds``. Two clocks: wall time (img/s, what a user waits for) and CPU time (images per
CPU-second: the CPU time of this process's threads, plus the example's DataLoader workers,
during the timed steps), which other processes on a shared machine inflate much less than
wall time. Compare ratios within one run only. Satgan's
trainers are timed after instance noise has decayed (the step index is set to
``instance_noise.decay_iters``: that is 2/3 of the default 600 iterations); the ``default,
noise phase`` row times the first ``decay_iters`` iterations, where instance noise is drawn,
and the run-average line weights the two phases by the default schedule.

Each thread count in ``--threads`` (default ``1,2``) runs in a process of its own (OpenMP and
inductor's compiled kernels fix their thread count when they start), one set of tables each.

    python bench/train_bench.py                                  # 64 px, ngf 16, batch 64, 1 and 2 threads (the CPU target)
    python bench/train_bench.py --size 64 --ngf 64 --batch 128 --device cuda --steps 100
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from satgan.augment import FusedDiffAugment
from satgan.imageops import denormalize
from satgan.model import ModelConfig, build_discriminator, build_generator
from satgan.params import from_mapping
from satgan.train import Dist, Trainer, TrainParams, model_config, pick_device
from satgan.train.fastpath import checked_runner
from satgan.train.registry import HACKS

REPO = Path(__file__).resolve().parents[1]

# Candidates timed as "default + X" (dotted keys under train.hacks; hinge needs soft labels off).
CANDIDATES: dict[str, dict[str, Any]] = {
    "diffaugment": {"diffaugment.enabled": True},
    "diffaugment + ada": {"diffaugment.enabled": True, "diffaugment.ada.enabled": True},
    "spectral_norm": {"spectral_norm": True},
    "r1 (every 4)": {"r1.enabled": True},
    "r1 (every 1)": {"r1.enabled": True, "r1.every": 1},
    "hinge_loss": {"hinge_loss": True, "soft_labels.enabled": False},
    "pixel_shuffle": {"checkerboard.enabled": True, "checkerboard.mode": "pixel_shuffle"},
    "resize_conv": {"checkerboard.enabled": True, "checkerboard.mode": "resize_conv"},
}


class PngFolder(Dataset):
    """The example's data path: decode a PNG per item, to tensor, normalise to [-1, 1]."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        arr = np.asarray(Image.open(self.files[i]).convert("RGB"), dtype=np.float32)
        return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _children_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by the processes ``pids`` (Linux /proc; 0 where unreadable)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14 and 15 of stat)
    return total


class Timing:
    """Wall and CPU seconds of one timed slice."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = wall, cpu


class ExampleLoop:
    """pytorch/examples dcgan main.py's loop on satgan's nets; :meth:`run` times ``n`` steps."""

    def __init__(self, cfg: ModelConfig, files: list[Path], batch: int, device: torch.device) -> None:
        torch.manual_seed(0)
        self.cfg, self.device = cfg, device
        self.g = build_generator(cfg).to(device)
        self.d = nn.Sequential(build_discriminator(cfg), nn.Sigmoid()).to(device)
        self.crit = nn.BCELoss()
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.loader = DataLoader(PngFolder(files), batch_size=batch, shuffle=True, num_workers=2, drop_last=True,
                                 persistent_workers=True)
        self.batches = self._forever()

    def _forever(self) -> Iterator[torch.Tensor]:
        while True:
            yield from self.loader

    def step(self) -> None:
        real = next(self.batches).to(self.device)
        b, dev = real.shape[0], self.device
        self.d.zero_grad()
        err_real = self.crit(self.d(real), torch.full((b,), 1.0, device=dev))
        err_real.backward()
        fake = self.g(torch.randn(b, self.cfg.nz, 1, 1, device=dev))
        err_fake = self.crit(self.d(fake.detach()), torch.full((b,), 0.0, device=dev))
        err_fake.backward()
        self.opt_d.step()
        self.g.zero_grad()
        err_g = self.crit(self.d(fake), torch.full((b,), 1.0, device=dev))
        err_g.backward()
        self.opt_g.step()
        (err_real + err_fake).item(), err_g.item()  # the example prints both every step

    def _worker_pids(self) -> list[int]:
        it = self.loader._iterator  # the persistent workers of the running epoch
        return [w.pid for w in it._workers] if it is not None and hasattr(it, "_workers") else []

    def run(self, n: int) -> Timing:
        _sync(self.device)
        workers = self._worker_pids()
        t0, c0, w0 = time.perf_counter(), time.process_time(), _children_cpu(workers)
        for _ in range(n):
            self.step()
        _sync(self.device)
        return Timing(time.perf_counter() - t0, time.process_time() - c0 + _children_cpu(workers) - w0)


class BareLoop:
    """The same nets in the leanest loop: resident images, the default's precision, BCE on logits, no host reads."""

    def __init__(self, cfg: ModelConfig, arr: np.ndarray, batch: int, device: torch.device,
                 autocast: Callable[[], Any], channels_last: bool) -> None:
        torch.manual_seed(0)
        self.cfg, self.device, self.batch, self.autocast = cfg, device, batch, autocast
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.fmt = fmt
        self.g = build_generator(cfg).to(device, memory_format=fmt)
        self.d = build_discriminator(cfg).to(device, memory_format=fmt)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.images = torch.from_numpy(arr).to(device).contiguous(memory_format=fmt)
        self.ones = torch.ones(batch, device=device)
        self.zeros = torch.zeros(batch, device=device)

    def step(self) -> None:
        bce = F.binary_cross_entropy_with_logits
        real = self.images[torch.randint(0, self.images.shape[0], (self.batch,), device=self.device)]
        z = torch.randn(self.batch, self.cfg.nz, 1, 1, device=self.device)
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            fake = self.g(z)
            loss_d = bce(self.d(real).float().view(-1), self.ones) + bce(self.d(fake.detach()).float().view(-1), self.zeros)
        loss_d.backward()
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast():
            loss_g = bce(self.d(fake).float().view(-1), self.ones)
        loss_g.backward()
        self.opt_g.step()

    def run(self, n: int) -> Timing:
        _sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            self.step()
        _sync(self.device)
        return Timing(time.perf_counter() - t0, time.process_time() - c0)


class SatganLoop:
    """satgan's Trainer.run_step through its checked fast path, metrics read every ``log_every`` steps, as the stage does."""

    def __init__(self, p: TrainParams, arr: np.ndarray, device: torch.device, start_step: int) -> None:
        self.p, self.device = p, device
        self.trainer = Trainer(p, model_config(p, arr.shape[2], arr.shape[1]), arr, device, Dist())
        self.trainer.progress.load_state_dict({"step": start_step})
        self.runner = checked_runner(self.trainer)
        self.start_step = start_step
        self.done = 0

    def run(self, n: int) -> Timing:
        tr = self.trainer
        _sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        out: dict[str, torch.Tensor] = {}
        for _ in range(n):
            out = tr.run_step(self.runner.step)
            self.done += 1
            if self.done % self.p.log_every == 0:
                {k: float(v) for k, v in out.items()}
        {k: float(v) for k, v in out.items()}  # the loop reads the last step's metrics too
        _sync(self.device)
        timing = Timing(time.perf_counter() - t0, time.process_time() - c0)
        tr.progress.load_state_dict({"step": self.start_step})  # stay in the phase being timed
        return timing


def set_hack(doc: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key under ``doc["hacks"]`` (it must exist)."""
    node = doc["hacks"]
    *parents, leaf = key.split(".")
    for k in parents:
        node = node[k]
    if leaf not in node:
        raise KeyError(f"train.hacks.{key}")
    node[leaf] = value


def params_for(base: dict[str, Any], args: argparse.Namespace, device: str, hacks_off: bool = False,
               fp32: bool = False, **hacks: Any) -> TrainParams:
    """The bench's train params: params.yaml's with the bench's sizes, then the hack overrides."""
    doc = copy.deepcopy(base)
    doc.update(batch_size=args.batch, ngf=args.ngf, ndf=args.ngf, device=device, log_every=args.log_every,
               threads=args.threads)
    if fp32:
        doc["cpu_bf16"] = "off"
        doc["amp"] = False
    if hacks_off:
        # "off" = as pytorch/examples' loop does it: the hacks the example also uses stay on
        for hack in HACKS:
            set_hack(doc, hack.params_key.removeprefix("train.hacks."), hack.in_example)
    for key, value in hacks.items():
        set_hack(doc, key, value)
    return from_mapping(TrainParams, doc, "train")


def smooth_fields(n: int, size: int) -> np.ndarray:
    """Same images for every configuration: smooth random fields (cheap, not trivially compressible), in [-1, 1]."""
    rng = np.random.default_rng(0)
    small = rng.uniform(-1, 1, (n, 3, size // 8, size // 8)).astype(np.float32)
    arr = np.repeat(np.repeat(small, 8, axis=2), 8, axis=3) + rng.normal(0, 0.1, (n, 3, size, size)).astype(np.float32)
    return np.clip(arr, -1, 1).astype(np.float32)


def time_interleaved(runners: dict[str, Callable[[int], Timing]], steps: int, warmup: int, rounds: int,
                     batch: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(img/s, img per CPU-second) of every runner in each round; rounds interleave the runners so a slow spell hits all."""
    for run in runners.values():
        run(warmup)
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(rounds):
        for name, run in runners.items():
            t = run(steps)
            wall[name].append(steps * batch / t.wall)
            cpu[name].append(steps * batch / max(t.cpu, 1e-9))
        print(f"round {r + 1}/{rounds} done", flush=True)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, choices=(32, 64, 128))
    ap.add_argument("--ngf", type=int, default=16, help="ngf = ndf")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per configuration per round")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds; each figure is their median")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", default="1,2",
                    help="torch threads for every configuration; a comma list runs one process per count")
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--no-candidates", action="store_true", help="skip the default + X rows")
    args = ap.parse_args()
    counts = [int(t) for t in str(args.threads).split(",")]
    if len(counts) > 1:
        # One process per thread count: OpenMP's pool and inductor's kernels keep the count they started with.
        for t in counts:
            argv = [a for i, a in enumerate(sys.argv[1:])
                    if a != "--threads" and sys.argv[i] != "--threads" and not a.startswith("--threads=")]
            print(f"\n## {t} thread{'s' if t > 1 else ''}\n", flush=True)
            subprocess.run([sys.executable, __file__, *argv, "--threads", str(t)], check=True)
        return
    args.threads = counts[0]

    torch.set_num_threads(args.threads)
    device = pick_device(args.device, 0)
    dev = device.type
    arr = smooth_fields(args.images, args.size)
    base = yaml.safe_load(args.params.read_text())["train"]
    default = params_for(base, args, dev)
    after_noise = default.hacks.instance_noise.decay_iters if default.hacks.instance_noise.enabled else 0

    configs: dict[str, tuple[TrainParams, int]] = {
        "default": (default, after_noise),
        "default (again)": (default, after_noise),
        "default, DiffAugment eager": (default, after_noise),
        "default fp32": (params_for(base, args, dev, fp32=True), after_noise),
        "hacks off": (params_for(base, args, dev, hacks_off=True), after_noise),
        "hacks off fp32": (params_for(base, args, dev, hacks_off=True, fp32=True), after_noise),
    }
    if after_noise:
        configs["default, noise phase"] = (default, 0)
    removable = [h for h in HACKS if h.is_on(default.hacks) and not h.in_example]
    for hack in removable:
        if hack.name == "instance_noise":
            continue  # timed as "default, noise phase" vs "default" (it is not drawn after it decayed)
        configs[f"default - {hack.name}"] = (params_for(base, args, dev, **{hack.params_key.removeprefix("train.hacks."): False}),
                                            after_noise)
    if not args.no_candidates:
        for name, overrides in CANDIDATES.items():
            candidate = params_for(base, args, dev, **overrides)
            if candidate != default:  # a candidate the default already has is timed as "default - X" instead
                configs[f"default + {name}"] = (candidate, after_noise)

    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, img in enumerate(denormalize(arr)):
            f = Path(tmp) / f"{i:05d}.png"
            Image.fromarray(img).save(f)
            files.append(f)
        runners: dict[str, Callable[[int], Timing]] = {
            "example": ExampleLoop(model_config(configs["hacks off fp32"][0], args.size, 3), files, args.batch, device).run}
        loops = {name: SatganLoop(p, arr, device, start) for name, (p, start) in configs.items()}
        augment = loops["default, DiffAugment eager"].trainer.augment
        if augment is not None:  # today's eager ops in place of the compiled ones (satgan.augment.FusedDiffAugment)
            augment.fused = FusedDiffAugment(augment.policy, compile=False, uncut=augment.uncut)
        prec = loops["default"].trainer.precision
        runners["bare"] = BareLoop(model_config(configs["hacks off"][0], args.size, 3), arr, args.batch, device,
                                   prec.autocast(), prec.channels_last).run
        runners.update({name: loop.run for name, loop in loops.items()})
        precision = prec.describe()
        print(f"device {device}, {args.size}x{args.size}x3, ngf=ndf={args.ngf}, batch {args.batch}, threads "
              f"{torch.get_num_threads()}, {args.rounds} rounds x {args.steps} steps, default precision: {precision}",
              flush=True)
        wall, cpu = time_interleaved(runners, args.steps, args.warmup, args.rounds, args.batch)

    for clock, rates in (("wall clock: img/s", wall), ("CPU time: images per CPU-second", cpu)):
        report(clock, {k: statistics.median(v) for k, v in rates.items()}, runners, default, after_noise, removable,
               not args.no_candidates)


def report(clock: str, med: dict[str, float], runners: dict[str, Any], default: TrainParams, after_noise: int,
           removable: list[Any], candidates: bool) -> None:
    """One clock's tables: every configuration against the example, the hacks' costs, the candidates' costs."""
    print(f"\n### {clock} (median of the rounds)\n")
    print("| configuration | rate | vs example |")
    print("| --- | --- | --- |")
    for k in runners:
        print(f"| {k} | {med[k]:,.1f} | {med[k] / med['example']:.2f}x |")
    if after_noise:
        iters = default.iterations
        phase = min(after_noise, iters) / iters
        avg = 1 / (phase / med["default, noise phase"] + (1 - phase) / med["default"])
        print(f"\ndefault over a whole default run ({after_noise} of {iters} iterations with instance noise): "
              f"{avg:,.1f} = {avg / med['example']:.2f}x the example")
    print(f"default hacks cost vs hacks off (same precision): {100 * (1 - med['default'] / med['hacks off']):.0f}% "
          "(goal <= 10%)")
    print(f"hacks off vs the bare loop: {med['hacks off'] / med['bare']:.2f}x (goal >= 0.97x); "
          f"default vs the example: {med['default'] / med['example']:.2f}x (goal >= 2.0x)")
    print(f"compiled DiffAugment vs eager: {med['default'] / med['default, DiffAugment eager']:.2f}x the default's rate")
    null = abs(med["default (again)"] / med["default"] - 1)
    print(f"null control: default timed twice differs by {100 * null:.1f}%"
          + (" > 5%: the machine was too noisy for differences of this size; rerun on a quiet machine" if null > 0.05
             else " (<= 5%)"))
    print("\n| hack | cost (rate lost vs without it) |")
    print("| --- | --- |")
    for hack in removable:
        if hack.name == "instance_noise":
            if after_noise:
                print(f"| instance_noise (first {after_noise} iterations only) | "
                      f"{100 * (1 - med['default, noise phase'] / med['default']):.1f}% |")
            continue
        name = hack.name + (" (loop-side, reads values only: a null control)" if hack.name == "failure_tracking" else "")
        print(f"| {name} | {100 * (1 - med['default'] / med[f'default - {hack.name}']):.1f}% |")
    if candidates:
        print("\n| candidate | cost vs default |")
        print("| --- | --- |")
        for name in (n for n in CANDIDATES if f"default + {n}" in med):
            print(f"| {name} | {100 * (1 - med[f'default + {name}'] / med['default']):.1f}% |")


if __name__ == "__main__":
    main()
