"""Sample tiles from a shared generator without DVC: ``python -m satgan.sample``.

Needs only the model folder (``model.json`` + ``generator.safetensors``, as written by
the train stage or fetched with ``dvc artifacts get`` / ``dvc get``) and torch. Nothing
is unpickled: a ``.pt``/``.pth`` file is refused by :func:`satgan.modelio.load_generator`,
as are a malformed card and non-finite weights. Latents come from the distribution recorded
in model.json (:func:`satgan.model.sample_latent`).

    python -m satgan.sample --model data/model --n 64 --out grid.png --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from satgan.cli import run_main
from satgan.errors import SatganError
from satgan.imageops import save_grid
from satgan.model import ModelConfig, sample_latent, sampling_rng
from satgan.modelio import load_generator


def sample(model: Path, n: int, seed: int, use_ema: bool = True) -> torch.Tensor:
    """``n`` tiles, (n, C, H, W) float32 in [-1, 1], from the generator in ``model``, seeded.

    The generator is in eval mode (BatchNorm running statistics), so a tile depends on its
    latent vector only, not on ``n``.
    """
    if n < 1:
        raise SatganError(f"--n must be at least 1, got {n}")
    generator, card = load_generator(model, use_ema=use_ema, device="cpu")
    cfg = ModelConfig.from_dict(card["architecture"])  # validated by load_generator
    z = sample_latent(cfg, n, torch.Generator().manual_seed(seed))
    with torch.inference_mode(), sampling_rng(cfg, seed):  # a G with dropout at sampling: seeded masks
        return generator(z).float().clamp_(-1, 1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m satgan.sample", description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="model folder (model.json + generator.safetensors)")
    ap.add_argument("--n", type=int, default=64, help="number of tiles")
    ap.add_argument("--out", type=Path, required=True, help="PNG grid to write")
    ap.add_argument("--seed", type=int, default=0, help="latent seed: same seed, same tiles")
    ap.add_argument("--nrow", type=int, default=8, help="tiles per grid row")
    ap.add_argument("--raw-weights", action="store_true", help="use the raw generator, not its EMA weights")
    args = ap.parse_args(argv)
    images = sample(args.model, args.n, args.seed, use_ema=not args.raw_weights)
    save_grid(images.numpy(), args.out, nrow=args.nrow)
    print(f"wrote {args.n} tiles from {args.model} (seed {args.seed}) to {args.out}")


if __name__ == "__main__":
    run_main(main, "satgan.sample")
