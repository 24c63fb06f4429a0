"""Stage 5, generate: sample fake tiles from the trained generator.

Reads ``model.json`` + ``generator[_ema].safetensors`` (never a pickle) through
:func:`satgan.modelio.load_generator` and writes into the samples folder:

- ``png/000000.png`` ... one PNG per sample (uint8, the training resolution),
- ``samples.npy`` + ``samples.json``: the same samples as (N, C, H, W) float32 in [-1, 1]
  with a sidecar in the :mod:`satgan.arrays` contract, so evaluate reads them
  memory-mapped instead of re-decoding PNGs (and without PNG's 8-bit rounding),
- ``grid.png``: the first ``grid_tiles`` samples,
- ``interpolation.png``: one row per pair of latents: spherically interpolated for a Gaussian
  latent, a straight line for a uniform one (the cube of U(-1, 1) latents is convex, a slerp
  arc would leave it).

Latents come from the distribution the model was trained on, recorded in model.json
(:func:`satgan.model.sample_latent`). Determinism: all latents are drawn at once from ``seed``
and the generator runs in eval mode, so BatchNorm uses its running statistics (a per-tile
affine map) instead of the statistics of the current batch; sample i therefore depends on its
latent alone and ``batch_size`` changes speed and memory only, never the images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from satgan import names
from satgan.arrays import save_array_with_sidecar
from satgan.fsutil import atomic_path
from satgan.imageops import denormalize, save_grid
from satgan.model import ModelConfig, sample_latent, sampling_rng
from satgan.modelio import load_generator
from satgan.params import check

MAX_SAMPLES = 100_000  # samples.npy at 128x128x3 float32 is ~20 GB there
MAX_BATCH = 65536
MAX_GRID = 1024  # tiles per row or column of a grid, rows or steps of the interpolation strip


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
        check("seed", self.seed >= 0, ">= 0", self.seed)
        check("n_samples", 1 <= self.n_samples <= MAX_SAMPLES, f"1 <= n_samples <= {MAX_SAMPLES}", self.n_samples)
        check("batch_size", 1 <= self.batch_size <= MAX_BATCH, f"1 <= batch_size <= {MAX_BATCH}", self.batch_size)
        check("grid_tiles", 1 <= self.grid_tiles <= self.n_samples, f"1 <= grid_tiles <= n_samples ({self.n_samples})",
              self.grid_tiles)
        check("grid_nrow", 1 <= self.grid_nrow <= MAX_GRID, f"1 <= grid_nrow <= {MAX_GRID}", self.grid_nrow)
        check("interp_rows", 1 <= self.interp_rows <= MAX_GRID, f"1 <= interp_rows <= {MAX_GRID}", self.interp_rows)
        check("interp_steps", 2 <= self.interp_steps <= MAX_GRID, f"2 <= interp_steps <= {MAX_GRID} (the two endpoints)",
              self.interp_steps)


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


def interpolation_latents(cfg: ModelConfig, rows: int, steps: int, seed: int) -> torch.Tensor:
    """``rows`` paths of ``steps`` latents between seeded endpoints -> (rows*steps, nz, 1, 1).

    Gaussian latents: slerp (their mass is on a shell); uniform latents: a straight line,
    which stays inside the [-1, 1] cube G was trained on.
    """
    nz = cfg.nz
    ends = sample_latent(cfg, 2 * rows, torch.Generator().manual_seed(seed)).reshape(rows, 2, nz)
    t = torch.linspace(0.0, 1.0, steps)
    if cfg.latent == "gaussian":
        paths = [slerp(ends[r, 0], ends[r, 1], t) for r in range(rows)]
    else:
        paths = [torch.lerp(ends[r, 0], ends[r, 1], t.reshape(-1, 1)) for r in range(rows)]
    return torch.cat(paths).reshape(-1, nz, 1, 1)


@torch.no_grad()
def run_generator(g: nn.Module, z: torch.Tensor, batch_size: int) -> np.ndarray:
    """Latents (N, nz, 1, 1) -> images (N, C, H, W) float32 in [-1, 1], ``batch_size`` at a time, in eval mode."""
    g.eval()  # BatchNorm running statistics: the output of a latent does not depend on its batch
    out = [g(z[s:s + batch_size]).float().cpu() for s in range(0, len(z), batch_size)]
    return torch.cat(out).clamp(-1.0, 1.0).numpy()


def generate_from(g: nn.Module, cfg: ModelConfig, params: GenerateParams, out_dir: str | Path,
                  extra: dict[str, Any]) -> dict[str, Any]:
    """Sample with generator ``g`` ((B, nz, 1, 1) -> (B, C, H, W)) built from ``cfg`` and write every output into ``out_dir``."""
    out = Path(out_dir)
    sample_seed, interp_seed = _seeds(params.seed)
    z = sample_latent(cfg, params.n_samples, torch.Generator().manual_seed(sample_seed))
    with sampling_rng(cfg, sample_seed):  # a G with dropout at sampling: seeded masks
        images = run_generator(g, z, params.batch_size)
    png_dir = out / names.SAMPLES_PNG_DIR
    png_dir.mkdir(parents=True, exist_ok=True)
    for old in png_dir.glob("*.png"):  # a previous, larger run must not leave extra samples behind
        old.unlink()
    for i, hwc in enumerate(denormalize(images)):
        with atomic_path(png_dir / f"{i:06d}.png", suffix=".png") as tmp:
            Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc).save(tmp, format="PNG")
    info = {"seed": params.seed, "n_samples": params.n_samples, "nz": cfg.nz, "latent": cfg.latent, **extra}
    save_array_with_sidecar(out / names.SAMPLES, images, info)
    save_grid(images[: params.grid_tiles], out / names.SAMPLE_GRID, nrow=params.grid_nrow)
    with sampling_rng(cfg, interp_seed):
        strip = run_generator(g, interpolation_latents(cfg, params.interp_rows, params.interp_steps, interp_seed),
                              params.batch_size)
    save_grid(strip, out / names.INTERPOLATION, nrow=params.interp_steps)
    return info


def generate(model_dir: str | Path, out_dir: str | Path, params: GenerateParams) -> dict[str, Any]:
    """Stage entry: load the generator from ``model_dir`` (EMA weights when asked and present) and sample."""
    g, card = load_generator(model_dir, use_ema=params.use_ema, device="cpu")
    extra = {
        "model": {k: card[k] for k in ("loaded_weights", "step", "params_hash", "data_hash")},
        "architecture": card["architecture"],
    }
    cfg = ModelConfig.from_dict(card["architecture"])  # validated by load_generator
    info = generate_from(g, cfg, params, out_dir, extra)
    print(f"generate: {params.n_samples} samples with {card['loaded_weights']} -> {Path(out_dir)} (grid.png, interpolation.png)")
    return info
