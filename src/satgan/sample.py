"""Sample tiles from a shared generator without DVC: ``python -m satgan.sample``.

Needs only the model folder (``model.json`` + ``generator.safetensors``, as written by
the train stage or fetched with ``dvc artifacts get`` / ``dvc get``) and torch. Nothing
is unpickled: a ``.pt``/``.pth`` file is refused by :func:`satgan.modelio.load_generator`,
as are a malformed card and non-finite weights. Latents come from the distribution recorded
in model.json (:func:`satgan.model.sample_latent`). A class-conditional model makes the classes
named by ``--class`` (repeat it for several; without it, every class), spread evenly over the
tiles: tile i gets the ``i % K``-th class named, the same rule as the generate stage.

``--out`` is a new PNG, written atomically: it must end in ``.png``, may replace only an existing
PNG, and may not lie inside the ``--model`` folder or any pipeline output folder of params.yaml's
``paths`` (data/model, data/eval, ...: DVC owns those). ``--n`` is 1-4096 tiles (one forward pass on
the CPU; a 64x64 grid of 128 px tiles is already 8k pixels a side).

    python -m satgan.sample --model data/model --n 64 --out grid.png --seed 0
    python -m satgan.sample --model data/model --class eForest --class dRiverLake --n 16 --out grid.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from satgan.cli import refuse_pipeline_output, run_main
from satgan.errors import SatganError
from satgan.imageops import save_grid
from satgan.model import ModelConfig, sample_latent, sampling_rng
from satgan.modelio import class_indices, load_generator, spread_labels
from satgan.params import seed_arg

MAX_N = 4096
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_out(out: Path, model: Path, params_path: Path = Path("params.yaml")) -> None:
    """Refuse an ``--out`` that is not a new or existing PNG outside the model and pipeline folders (one line)."""
    if out.suffix.lower() != ".png":
        raise SatganError(f"--out {out}: expected a file name ending in .png (the grid is written as PNG)")
    refuse_pipeline_output(out, "--out", params_path, extra={"the --model folder": model})
    if out.is_symlink() or (out.exists() and not out.is_file()):
        kind = "a directory" if out.is_dir() else "a symlink" if out.is_symlink() else "not a regular file"
        raise SatganError(f"--out {out}: {kind}; expected a PNG file name")
    if out.exists():
        try:
            with open(out, "rb") as fh:
                head = fh.read(len(PNG_MAGIC))
        except OSError as exc:
            raise SatganError(f"--out {out}: cannot read the existing file: {exc.strerror or exc}") from None
        if head != PNG_MAGIC:
            raise SatganError(f"--out {out}: an existing file that is not a PNG; refusing to overwrite it")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise SatganError(f"--out {out}: {parent} is not a directory")


def _bounded(low: int, high: int, flag: str):  # noqa: ANN202 - an argparse type
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {text!r:.40}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in {low}..{high}, got {text:.40}")
        return value

    parse.__name__ = flag
    return parse


def sample(model: Path, n: int, seed: int, use_ema: bool = True, classes: list[str] | None = None) -> torch.Tensor:
    """``n`` tiles, (n, C, H, W) float32 in [-1, 1], from the generator in ``model``, seeded.

    The generator is in eval mode (BatchNorm running statistics), so a tile depends on its
    latent vector (and class) only, not on ``n``. ``classes``: for a conditional model, the class
    names to make (None: all of them), tile i the ``i % len(classes)``-th; for an unconditional
    model any list is one error naming ``--class``.
    """
    if not 1 <= n <= MAX_N:
        raise SatganError(f"--n: expected an integer in 1..{MAX_N}, got {n}")
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
    ap.add_argument("--n", type=_bounded(1, MAX_N, "n"), default=64, help=f"number of tiles (1-{MAX_N})")
    ap.add_argument("--out", type=Path, required=True,
                    help="PNG grid to write (.png; not inside --model or a pipeline output folder such as data/model)")
    ap.add_argument("--seed", type=seed_arg, default=0, help="latent seed (0..2**63-1): same seed, same tiles")
    ap.add_argument("--nrow", type=_bounded(1, MAX_N, "nrow"), default=8, help=f"tiles per grid row (1-{MAX_N})")
    ap.add_argument("--raw-weights", action="store_true", help="use the raw generator, not its EMA weights")
    ap.add_argument("--class", dest="classes", action="append", metavar="NAME",
                    help="a class-conditional model: make this class (repeat for several, spread evenly over the "
                         "tiles; default: every class); an unconditional model refuses it")
    args = ap.parse_args(argv)
    check_out(args.out, args.model)
    images = sample(args.model, args.n, args.seed, use_ema=not args.raw_weights, classes=args.classes)
    try:
        save_grid(images.numpy(), args.out, nrow=args.nrow)
    except OSError as exc:
        raise SatganError(f"--out {args.out}: cannot write: {exc.strerror or exc}") from None
    made = f" of class {', '.join(args.classes)}" if args.classes else ""
    print(f"wrote {args.n} tiles{made} from {args.model} (seed {args.seed}) to {args.out}")


if __name__ == "__main__":
    run_main(main, "satgan.sample")
