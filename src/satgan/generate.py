"""Stage 5, generate: sample fake tiles from the trained generator.

Reads ``model.json`` + ``generator[_ema].safetensors`` (never a pickle) through
:func:`satgan.modelio.load_generator` and writes into the samples folder:

- ``png/000000.png`` ... one PNG per sample (uint8, the training resolution),
- ``samples.npy`` + ``samples.json``: the same samples as (N, C, H, W) float32 in [-1, 1]
  with a sidecar in the :mod:`satgan.arrays` contract, so evaluate reads them
  memory-mapped instead of re-decoding PNGs (and without PNG's 8-bit rounding),
- ``grid.png``: the first ``grid_tiles`` samples,
- ``interpolation.png``: one row per pair of Gaussian latents, spherically interpolated.

Determinism: all latents are drawn at once from ``seed`` and the generator runs in eval
mode, so BatchNorm uses its running statistics (a per-tile affine map) instead of the
statistics of the current batch; sample i therefore depends on its latent alone and
``batch_size`` changes speed and memory only, never the images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from satgan.fsutil import atomic_path, write_json_atomic
from satgan.imageops import denormalize, save_grid
from satgan.modelio import load_generator
from satgan.params import InvalidParam


@dataclass(frozen=True)
class GenerateParams:
    """params.yaml ``generate:``."""

    seed: int
    n_samples: int
    batch_size: int
    use_ema: bool
    grid_tiles: int
    grid_nrow: int
    interp_rows: int
    interp_steps: int

    def __post_init__(self) -> None:
        for name in ("n_samples", "batch_size", "grid_tiles", "grid_nrow", "interp_rows"):
            if getattr(self, name) < 1:
                raise InvalidParam(name, f"expected an integer >= 1, got {getattr(self, name)}")
        if self.interp_steps < 2:
            raise InvalidParam("interp_steps", f"expected >= 2 (the two endpoints), got {self.interp_steps}")
        if self.grid_tiles > self.n_samples:
            raise InvalidParam("grid_tiles", f"expected at most n_samples ({self.n_samples}), got {self.grid_tiles}")


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents z0 (D,) and z1 (D,) at fractions t (T,) -> (T, D).

    Gaussian latents in high dimension concentrate on a shell of radius ~sqrt(D); a
    straight line between two of them passes through the low-norm interior the generator
    never saw in training, while slerp follows the great circle (White 2016, "Sampling
    generative networks"). Falls back to a straight line for (anti)parallel endpoints.
    """
    if z0.shape != z1.shape or z0.ndim != 1:
        raise ValueError(f"expected two (D,) latents of the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}")
    t = t.to(torch.float64).reshape(-1, 1)
    a, b = z0.to(torch.float64), z1.to(torch.float64)
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if torch.sin(omega).abs() < 1e-6:
        out = (1 - t) * a + t * b
    else:
        out = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return out.to(z0.dtype)


def _seeds(seed: int) -> tuple[int, int]:
    """Two independent seeds (samples, interpolation) from one, so n_samples does not move the strip."""
    a, b = np.random.SeedSequence(seed).generate_state(2)
    return int(a), int(b)


def sample_latents(n: int, nz: int, seed: int) -> torch.Tensor:
    """``n`` standard-normal latents (n, nz, 1, 1) float32, drawn at once from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, nz, 1, 1, generator=gen)


def interpolation_latents(rows: int, steps: int, nz: int, seed: int) -> torch.Tensor:
    """``rows`` slerp paths of ``steps`` latents between seeded Gaussian endpoints -> (rows*steps, nz, 1, 1)."""
    gen = torch.Generator().manual_seed(seed)
    ends = torch.randn(rows, 2, nz, generator=gen)
    t = torch.linspace(0.0, 1.0, steps)
    return torch.cat([slerp(ends[r, 0], ends[r, 1], t) for r in range(rows)]).reshape(-1, nz, 1, 1)


@torch.no_grad()
def run_generator(g: nn.Module, z: torch.Tensor, batch_size: int) -> np.ndarray:
    """Latents (N, nz, 1, 1) -> images (N, C, H, W) float32 in [-1, 1], ``batch_size`` at a time, in eval mode."""
    g.eval()  # BatchNorm running statistics: the output of a latent does not depend on its batch
    out = [g(z[s:s + batch_size]).float().cpu() for s in range(0, len(z), batch_size)]
    return torch.cat(out).clamp(-1.0, 1.0).numpy()


def save_array(images: np.ndarray, npy_path: Path, extra: dict[str, Any]) -> None:
    """Write (N, C, H, W) float32 ``images`` as .npy + sidecar .json in the :mod:`satgan.arrays` contract."""
    with atomic_path(npy_path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:  # a handle, so np.save does not append another ".npy"
            np.save(fh, images)
    meta = {
        "shape": list(images.shape),
        "dtype": str(images.dtype),
        "channels": int(images.shape[1]),
        "image_size": int(images.shape[2]),
        "value_range": [-1, 1],
        **extra,
    }
    write_json_atomic(npy_path.with_suffix(".json"), meta)


def generate_from(g: nn.Module, nz: int, params: GenerateParams, out_dir: str | Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Sample with generator ``g`` ((B, nz, 1, 1) -> (B, C, H, W)) and write every output into ``out_dir``."""
    out = Path(out_dir)
    sample_seed, interp_seed = _seeds(params.seed)
    images = run_generator(g, sample_latents(params.n_samples, nz, sample_seed), params.batch_size)
    png_dir = out / "png"
    png_dir.mkdir(parents=True, exist_ok=True)
    for old in png_dir.glob("*.png"):  # a previous, larger run must not leave extra samples behind
        old.unlink()
    for i, hwc in enumerate(denormalize(images)):
        with atomic_path(png_dir / f"{i:06d}.png", suffix=".png") as tmp:
            Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc).save(tmp, format="PNG")
    info = {"seed": params.seed, "n_samples": params.n_samples, "nz": nz, **extra}
    save_array(images, out / "samples.npy", info)
    save_grid(images[: params.grid_tiles], out / "grid.png", nrow=params.grid_nrow)
    strip = run_generator(g, interpolation_latents(params.interp_rows, params.interp_steps, nz, interp_seed), params.batch_size)
    save_grid(strip, out / "interpolation.png", nrow=params.interp_steps)
    return info


def generate(model_dir: str | Path, out_dir: str | Path, params: GenerateParams) -> dict[str, Any]:
    """Stage entry: load the generator from ``model_dir`` (EMA weights when asked and present) and sample."""
    g, card = load_generator(model_dir, use_ema=params.use_ema, device="cpu")
    extra = {
        "model": {k: card[k] for k in ("loaded_weights", "step", "params_hash", "data_hash")},
        "architecture": card["architecture"],
    }
    info = generate_from(g, int(card["nz"]), params, out_dir, extra)
    print(f"generate: {params.n_samples} samples with {card['loaded_weights']} -> {Path(out_dir)} (grid.png, interpolation.png)")
    return info
