"""Train-step throughput: satgan's trainer vs the canonical PyTorch DCGAN example loop.

Same nets (satgan's build_generator/build_discriminator; the example gets D + Sigmoid and
BCELoss as in pytorch/examples dcgan/main.py), same images, same batch size, one process:

- ``example``:   images read as PNG files through a DataLoader with 2 workers, fp32, host->device
                 copy per step, Sigmoid + BCE, ``.item()`` on both losses every step;
- ``satgan-off``: satgan's Trainer with every hack off except the ones the example does too
                 (``in_example`` in satgan.train.registry: N(0, 1) latents, separate real/fake batches,
                 the non-saturating loss); data resident, metrics read every log_every;
- ``satgan``:    satgan's Trainer with params.yaml's default hacks.

Prints img/s for each and the ratios. On a CPU use a small size so it finishes in minutes:
    python bench/train_bench.py --size 32 --ngf 16 --batch 64 --steps 30
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from satgan.imageops import denormalize
from satgan.model import ModelConfig, build_discriminator, build_generator
from satgan.params import from_mapping
from satgan.train import Dist, Trainer, TrainParams, model_config, pick_device
from satgan.train.registry import HACKS

REPO = Path(__file__).resolve().parents[1]


class PngFolder(Dataset):
    """The example's data path: decode a PNG per item, to tensor, normalise to [-1, 1]."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        arr = np.asarray(Image.open(self.files[i]).convert("RGB"), dtype=np.float32)
        return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


def example_loop(cfg: ModelConfig, files: list[Path], batch: int, steps: int, warmup: int, device: torch.device) -> float:
    """pytorch/examples dcgan main.py's loop on satgan's nets; returns img/s."""
    torch.manual_seed(0)
    g, d = build_generator(cfg).to(device), nn.Sequential(build_discriminator(cfg), nn.Sigmoid()).to(device)
    crit = nn.BCELoss()
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = DataLoader(PngFolder(files), batch_size=batch, shuffle=True, num_workers=2, drop_last=True, persistent_workers=True)
    done, t0 = 0, 0.0
    while done < steps + warmup:
        for real in loader:
            if done == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            real = real.to(device)
            b = real.shape[0]
            d.zero_grad()
            err_real = crit(d(real), torch.full((b,), 1.0, device=device))
            err_real.backward()
            fake = g(torch.randn(b, cfg.nz, 1, 1, device=device))
            err_fake = crit(d(fake.detach()), torch.full((b,), 0.0, device=device))
            err_fake.backward()
            opt_d.step()
            g.zero_grad()
            err_g = crit(d(fake), torch.full((b,), 1.0, device=device))
            err_g.backward()
            opt_g.step()
            (err_real + err_fake).item(), err_g.item()  # the example prints both every step
            done += 1
            if done >= steps + warmup:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def satgan_loop(p: TrainParams, arr: np.ndarray, steps: int, warmup: int, device: torch.device) -> float:
    """satgan's Trainer.run_step, metrics read every log_every steps; returns img/s."""
    cfg = model_config(p, arr.shape[2], arr.shape[1])
    tr = Trainer(p, cfg, arr, device, Dist())
    out = {}
    for i in range(warmup + steps):
        if i == warmup:
            float(out["loss_d"]) if out else None
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        out = tr.run_step()
        if (i + 1) % p.log_every == 0:
            {k: float(v) for k, v in out.items()}
    {k: float(v) for k, v in out.items()}
    return steps * p.batch_size / (time.perf_counter() - t0)


def params_for(base: dict, hacks_on: bool, args: argparse.Namespace, device: str) -> TrainParams:
    doc = copy.deepcopy(base)
    doc.update(batch_size=args.batch, ngf=args.ngf, ndf=args.ngf, device=device, log_every=args.log_every)
    if not hacks_on:
        # "off" = as pytorch/examples' loop does it: the hacks the example also uses stay on
        for hack in HACKS:
            if hack.is_switch:
                doc["hacks"][hack.name] = hack.in_example
            else:
                doc["hacks"][hack.name]["enabled"] = hack.in_example
    return from_mapping(TrainParams, doc, "train")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32, choices=(32, 64, 128))
    ap.add_argument("--ngf", type=int, default=16, help="ngf = ndf")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    args = ap.parse_args()

    device = pick_device(args.device, 0)
    rng = np.random.default_rng(0)
    # Same images for both: smooth random fields (cheap to make, not trivially compressible), in [-1, 1].
    small = rng.uniform(-1, 1, (args.images, 3, args.size // 8, args.size // 8)).astype(np.float32)
    arr = np.repeat(np.repeat(small, 8, axis=2), 8, axis=3) + rng.normal(0, 0.1, (args.images, 3, args.size, args.size)).astype(np.float32)
    arr = np.clip(arr, -1, 1).astype(np.float32)
    base = yaml.safe_load(args.params.read_text())["train"]
    res: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, img in enumerate(denormalize(arr)):
            f = Path(tmp) / f"{i:05d}.png"
            Image.fromarray(img).save(f)
            files.append(f)
        cfg = model_config(params_for(base, False, args, device.type), args.size, 3)
        res["example"] = example_loop(cfg, files, args.batch, args.steps, args.warmup, device)
    res["satgan-off"] = satgan_loop(params_for(base, False, args, device.type), arr, args.steps, args.warmup, device)
    res["satgan"] = satgan_loop(params_for(base, True, args, device.type), arr, args.steps, args.warmup, device)
    print(f"device {device}, {args.size}x{args.size}x3, ngf=ndf={args.ngf}, batch {args.batch}, {args.steps} timed steps, threads {torch.get_num_threads()}")
    for k, v in res.items():
        print(f"{k:11s} {v:10.1f} img/s")
    print(f"satgan (default hacks) / example: {res['satgan'] / res['example']:.2f}x")
    print(f"satgan hacks-off / example:       {res['satgan-off'] / res['example']:.2f}x")
    print(f"default hacks cost vs hacks off:  {100 * (1 - res['satgan'] / res['satgan-off']):.0f}% slower")


if __name__ == "__main__":
    main()
