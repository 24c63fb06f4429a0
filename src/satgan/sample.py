"""Sample tiles from a shared generator without DVC: ``python -m satgan.sample``.

Needs only the model folder (``model.json`` + ``generator.safetensors``, as written by
the train stage or fetched with ``dvc artifacts get`` / ``dvc get``) and torch. Nothing
is unpickled: a ``.pt``/``.pth`` file is refused by :func:`satgan.modelio.load_generator`,
as are a malformed card and non-finite weights. Latents come from the distribution recorded
in model.json (:func:`satgan.model.sample_latent`). A class-conditional model makes the classes
named by ``--class`` (repeat it for several; without it, every class), spread evenly over the
tiles: tile i gets the ``i % K``-th class named, the same rule as the generate stage.

    python -m satgan.sample --model data/model --n 64 --out grid.png --seed 0
    python -m satgan.sample --model data/model --class eForest --class dRiverLake --n 16 --out grid.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from satgan.cli import run_main
from satgan.errors import SatganError
from satgan.imageops import save_grid
from satgan.model import ModelConfig, sample_latent, sampling_rng
from satgan.modelio import class_indices, load_generator, spread_labels


def sample(model: Path, n: int, seed: int, use_ema: bool = True, classes: list[str] | None = None) -> torch.Tensor:
    """``n`` tiles, (n, C, H, W) float32 in [-1, 1], from the generator in ``model``, seeded.

    The generator is in eval mode (BatchNorm running statistics), so a tile depends on its
    latent vector (and class) only, not on ``n``. ``classes``: for a conditional model, the class
    names to make (None: all of them), tile i the ``i % len(classes)``-th; for an unconditional
    model any list is one error naming ``--class``.
    """
    if n < 1:
        raise SatganError(f"--n must be at least 1, got {n}")
    generator, card = load_generator(model, use_ema=use_ema, device="cpu")
    cfg = ModelConfig.from_dict(card["architecture"])  # validated by load_generator
    chosen = class_indices(card, classes, "--class")
    z = sample_latent(cfg, n, torch.Generator().manual_seed(seed))
    with torch.inference_mode(), sampling_rng(cfg, seed):  # a G with dropout at sampling: seeded masks
        out = generator(z) if not cfg.is_conditional else generator(z, spread_labels(n, chosen))
        return out.float().clamp_(-1, 1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m satgan.sample", description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="model folder (model.json + generator.safetensors)")
    ap.add_argument("--n", type=int, default=64, help="number of tiles")
    ap.add_argument("--out", type=Path, required=True, help="PNG grid to write")
    ap.add_argument("--seed", type=int, default=0, help="latent seed: same seed, same tiles")
    ap.add_argument("--nrow", type=int, default=8, help="tiles per grid row")
    ap.add_argument("--raw-weights", action="store_true", help="use the raw generator, not its EMA weights")
    ap.add_argument("--class", dest="classes", action="append", metavar="NAME",
                    help="a class-conditional model: make this class (repeat for several, spread evenly over the "
                         "tiles; default: every class); an unconditional model refuses it")
    args = ap.parse_args(argv)
    images = sample(args.model, args.n, args.seed, use_ema=not args.raw_weights, classes=args.classes)
    save_grid(images.numpy(), args.out, nrow=args.nrow)
    made = f" of class {', '.join(args.classes)}" if args.classes else ""
    print(f"wrote {args.n} tiles{made} from {args.model} (seed {args.seed}) to {args.out}")


if __name__ == "__main__":
    run_main(main, "satgan.sample")
