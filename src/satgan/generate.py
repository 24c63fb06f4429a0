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
  arc would leave it); for a conditional model row r keeps one class (the ``r % K``-th chosen),
- ``classes/`` (always): ``classes.json`` = ``{"conditional": ..., "classes": [the model's class
  names, in label order]}`` ([] for an unconditional model); for a conditional model also
  ``labels.npy`` (int64, the class index of each row of samples.npy, into that full list),
  ``grid.png`` (one row per chosen class, the same ``grid_nrow`` latents in every row) and
  ``interpolation.png`` (one row per chosen class, each the same latent walk).

A conditional model makes the classes ``generate.classes`` names (``all``: every class of the
model), spread evenly over the samples: row i gets chosen class ``i % K``, so each class has
``n_samples // K`` samples and the first ``n_samples % K`` chosen classes one more. The latents
are the ones an unconditional model would get from the same seed.

Latents come from the distribution the model was trained on, recorded in model.json
(:func:`satgan.model.sample_latent`). Determinism: all latents are drawn at once from ``seed``
and the generator runs in eval mode, so BatchNorm uses its running statistics (a per-tile
affine map) instead of the statistics of the current batch; sample i therefore depends on its
latent alone and ``batch_size`` changes speed and memory only, never the images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from satgan import names
from satgan.arrays import save_array_with_sidecar
from satgan.errors import ParamsError
from satgan.fsutil import atomic_path, write_json_atomic
from satgan.imageops import denormalize, save_grid
from satgan.model import ModelConfig, sample_latent, sampling_rng
from satgan.modelio import class_indices, load_generator, spread_labels
from satgan.params import check, check_seed

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
    classes: Literal["all"] | tuple[str, ...]  # a conditional model's classes to make; checked against the model's

    def __post_init__(self) -> None:
        check_seed("seed", self.seed)
        check("n_samples", 1 <= self.n_samples <= MAX_SAMPLES, f"1 <= n_samples <= {MAX_SAMPLES}", self.n_samples)
        check("batch_size", 1 <= self.batch_size <= MAX_BATCH, f"1 <= batch_size <= {MAX_BATCH}", self.batch_size)
        check("grid_tiles", 1 <= self.grid_tiles <= self.n_samples, f"1 <= grid_tiles <= n_samples ({self.n_samples})",
              self.grid_tiles)
        check("grid_nrow", 1 <= self.grid_nrow <= MAX_GRID, f"1 <= grid_nrow <= {MAX_GRID}", self.grid_nrow)
        check("interp_rows", 1 <= self.interp_rows <= MAX_GRID, f"1 <= interp_rows <= {MAX_GRID}", self.interp_rows)
        check("interp_steps", 2 <= self.interp_steps <= MAX_GRID, f"2 <= interp_steps <= {MAX_GRID} (the two endpoints)",
              self.interp_steps)
        if self.classes != "all":
            check("classes", len(self.classes) > 0, "'all' or a non-empty list of class names", list(self.classes))
            check("classes", len(set(self.classes)) == len(self.classes), "distinct class names", list(self.classes))
            check("classes", len(self.classes) <= self.n_samples,
                  f"at most n_samples ({self.n_samples}) classes: at least one sample each", list(self.classes))

    @property
    def chosen_classes(self) -> list[str] | None:
        """The class names asked for, or None for ``all``."""
        return None if self.classes == "all" else list(self.classes)


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


def _seeds(seed: int) -> tuple[int, int, int, int]:
    """Independent seeds (samples, interpolation, per-class grid, per-class walk) from one, so n_samples moves none of the others.

    The first two are the ones generate always used (``generate_state`` extends its output, it
    does not change its start): an unconditional model's samples and strip are as before.
    """
    a, b, c, d = np.random.SeedSequence(seed).generate_state(4)
    return int(a), int(b), int(c), int(d)


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
def run_generator(g: nn.Module, z: torch.Tensor, batch_size: int, labels: torch.Tensor | None = None) -> np.ndarray:
    """Latents (N, nz, 1, 1) (and a conditional G's int64 ``labels`` (N,)) -> images (N, C, H, W) float32 in [-1, 1].

    ``batch_size`` at a time, in eval mode.
    """
    g.eval()  # BatchNorm running statistics: the output of a latent does not depend on its batch
    out = [(g(z[s:s + batch_size]) if labels is None else g(z[s:s + batch_size], labels[s:s + batch_size])).float().cpu()
           for s in range(0, len(z), batch_size)]
    return torch.cat(out).clamp(-1.0, 1.0).numpy()


def generate_from(g: nn.Module, cfg: ModelConfig, params: GenerateParams, out_dir: str | Path,
                  extra: dict[str, Any], classes: list[str] | None = None) -> dict[str, Any]:
    """Sample with generator ``g`` built from ``cfg`` and write every output into ``out_dir``.

    ``g``: (B, nz, 1, 1) -> (B, C, H, W), or for a conditional ``cfg`` ``g(z, y)``; ``classes``:
    the model's class names in label order (model.json's ``classes``; [] or None when unconditional).
    """
    out = Path(out_dir)
    classes = list(classes or [])
    if len(classes) != cfg.n_classes:
        raise ValueError(f"generate_from: {len(classes)} class names for a model with n_classes={cfg.n_classes}")
    card = {"classes": classes, "architecture": {"conditional": cfg.conditional}}
    # the chosen classes' label indices ([] for an unconditional model; a list of names for one is refused here)
    chosen = class_indices(card, params.chosen_classes, "generate.classes", ParamsError)
    if len(chosen) > params.n_samples:
        raise ParamsError(f"generate.n_samples: expected at least one sample per class ({len(chosen)} classes), "
                          f"got {params.n_samples}")
    sample_seed, interp_seed, grid_seed, walk_seed = _seeds(params.seed)
    z = sample_latent(cfg, params.n_samples, torch.Generator().manual_seed(sample_seed))
    labels = spread_labels(params.n_samples, chosen) if chosen else None
    with sampling_rng(cfg, sample_seed):  # a G with dropout at sampling: seeded masks
        images = run_generator(g, z, params.batch_size, labels)
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
    # a conditional model's walk r stays in one class: chosen class r % K, like the samples
    row_labels = spread_labels(params.interp_rows, chosen).repeat_interleave(params.interp_steps) if chosen else None
    with sampling_rng(cfg, interp_seed):
        strip = run_generator(g, interpolation_latents(cfg, params.interp_rows, params.interp_steps, interp_seed),
                              params.batch_size, row_labels)
    save_grid(strip, out / names.INTERPOLATION, nrow=params.interp_steps)
    _write_classes(g, cfg, params, out / names.SAMPLES_CLASSES_DIR, classes, chosen, labels, (grid_seed, walk_seed))
    return info


def _write_classes(g: nn.Module, cfg: ModelConfig, params: GenerateParams, folder: Path, classes: list[str],
                   chosen: list[int], labels: torch.Tensor | None, seeds: tuple[int, int]) -> None:
    """``classes/``: classes.json always; a conditional model's labels.npy, per-class grid and per-class walk too.

    Files from an earlier run that this one does not write (a conditional model's, after an
    unconditional one) are removed, so the folder always describes samples.npy.
    """
    folder.mkdir(parents=True, exist_ok=True)
    per_class = (names.SAMPLE_LABELS, names.CLASS_GRID, names.CLASS_INTERPOLATION)
    for name in per_class:
        (folder / name).unlink(missing_ok=True)
    if labels is not None:
        with atomic_path(folder / names.SAMPLE_LABELS, suffix=".npy") as tmp:
            with open(tmp, "wb") as fh:  # a handle: np.save would append .npy to the temp name
                np.save(fh, labels.numpy().astype(np.int64), allow_pickle=False)
        k, cols = len(chosen), params.grid_nrow
        rows = torch.as_tensor(chosen, dtype=torch.int64)
        # grid: row r is chosen class r, column c the same latent in every row
        grid_seed, walk_seed = seeds
        z = sample_latent(cfg, cols, torch.Generator().manual_seed(grid_seed)).repeat(k, 1, 1, 1)
        with sampling_rng(cfg, grid_seed):
            grid = run_generator(g, z, params.batch_size, rows.repeat_interleave(cols))
        save_grid(grid, folder / names.CLASS_GRID, nrow=cols)
        # interpolation: row r walks one latent path (slerp; a line for uniform latents) as chosen class r
        walk = interpolation_latents(cfg, 1, params.interp_steps, walk_seed).repeat(k, 1, 1, 1)
        with sampling_rng(cfg, walk_seed):
            strip = run_generator(g, walk, params.batch_size, rows.repeat_interleave(params.interp_steps))
        save_grid(strip, folder / names.CLASS_INTERPOLATION, nrow=params.interp_steps)
    write_json_atomic(folder / names.CLASSES_INFO, {"conditional": cfg.conditional, "classes": classes})


def generate(model_dir: str | Path, out_dir: str | Path, params: GenerateParams) -> dict[str, Any]:
    """Stage entry: load the generator from ``model_dir`` (EMA weights when asked and present) and sample."""
    g, card = load_generator(model_dir, use_ema=params.use_ema, device="cpu")
    extra = {
        "model": {k: card[k] for k in ("loaded_weights", "step", "params_hash", "data_hash")},
        "architecture": card["architecture"],
    }
    cfg = ModelConfig.from_dict(card["architecture"])  # validated by load_generator
    info = generate_from(g, cfg, params, out_dir, extra, card["classes"])
    made = (f", classes {', '.join(params.chosen_classes or card['classes'])} (classes/)" if cfg.is_conditional else "")
    print(f"generate: {params.n_samples} samples with {card['loaded_weights']} -> {Path(out_dir)} "
          f"(grid.png, interpolation.png{made})")
    return info
