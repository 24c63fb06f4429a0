"""Model files: safetensors weights + a JSON card. Never pickle.

``save_model(out_dir, ...)`` writes, each atomically:

- ``generator.safetensors``      G's raw (trained) state dict,
- ``generator_ema.safetensors``  the EMA of G's weights, only when EMA is on (use it for sampling),
- ``discriminator.safetensors``  D's state dict,
- ``model.json``                 ``architecture`` (a :class:`~satgan.model.ModelConfig` dict), ``nz``,
  ``ema`` (bool), ``params_hash``, ``data_hash``, ``step``, ``git_rev`` (or null), plus any extras.

``load_generator(model_dir)`` rebuilds G from the card and loads the EMA weights when present.
A ``.pt``/``.pth``/``.pkl``/``.ckpt`` path is refused with :class:`ModelFileError`, without
opening it: unpickling a file runs arbitrary code.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from satgan.errors import ModelFileError
from satgan.fsutil import atomic_path, write_json_atomic
from satgan.model import ModelConfig, build_discriminator, build_generator

GENERATOR_FILE = "generator.safetensors"
GENERATOR_EMA_FILE = "generator_ema.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
CARD_FILE = "model.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


def git_revision(cwd: str | Path | None = None) -> str | None:
    """The current git commit (with ``-dirty`` when the tree has changes), or None outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


def state_dict_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous CPU copy of ``module``'s state dict (safetensors needs contiguous tensors)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_weights(path: str | Path, module_or_state: nn.Module | dict[str, torch.Tensor]) -> None:
    """Write a state dict as safetensors, atomically."""
    state = state_dict_cpu(module_or_state) if isinstance(module_or_state, nn.Module) else module_or_state
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, str(tmp))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors state dict; refuses pickle files and reports unreadable ones as ModelFileError."""
    path = Path(path)
    _refuse_pickle(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable safetensors file: {exc}") from None


def save_model(
    out_dir: str | Path,
    generator: nn.Module,
    discriminator: nn.Module,
    config: ModelConfig,
    *,
    generator_ema: nn.Module | None = None,
    params_hash: str,
    data_hash: str,
    step: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the model files into ``out_dir`` (created); returns the card written as model.json.

    The card is written last, so a folder whose model.json names a step has all its weights.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / GENERATOR_FILE, generator)
    if generator_ema is not None:
        save_weights(out / GENERATOR_EMA_FILE, generator_ema)
    else:
        (out / GENERATOR_EMA_FILE).unlink(missing_ok=True)  # never leave a stale EMA next to new weights
    save_weights(out / DISCRIMINATOR_FILE, discriminator)
    card: dict[str, Any] = {
        "format": "satgan-dcgan/1",
        "architecture": config.to_dict(),
        "nz": config.nz,
        "ema": generator_ema is not None,
        "files": {
            "generator": GENERATOR_FILE,
            "generator_ema": GENERATOR_EMA_FILE if generator_ema is not None else None,
            "discriminator": DISCRIMINATOR_FILE,
        },
        "params_hash": params_hash,
        "data_hash": data_hash,
        "step": int(step),
        "git_rev": git_revision(),
        **(extra or {}),
    }
    write_json_atomic(out / CARD_FILE, card)
    return card


def read_card(model_dir: str | Path) -> tuple[dict[str, Any], ModelConfig]:
    """Read model.json; returns ``(card, ModelConfig)``. Refuses pickle paths."""
    model_dir = Path(model_dir)
    _refuse_pickle(model_dir)
    if model_dir.is_file():
        raise ModelFileError(f"{model_dir}: expected a model folder (with {CARD_FILE} and .safetensors files)")
    card_path = model_dir / CARD_FILE
    if not card_path.is_file():
        pickles = sorted(p.name for p in model_dir.glob("*") if p.suffix in PICKLE_SUFFIXES) if model_dir.is_dir() else []
        hint = f" (found {pickles}: pickle files are refused, use satgan's safetensors format)" if pickles else ""
        raise ModelFileError(f"{card_path}: model card not found{hint}")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        config = ModelConfig.from_dict(card["architecture"])
        if not isinstance(card["ema"], bool):
            raise ValueError("'ema' must be true or false")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{card_path}: not a valid satgan model card: {exc}") from None
    return card, config


def load_generator(model_dir: str | Path, use_ema: bool = True, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild G from ``model_dir`` in eval mode; EMA weights when ``use_ema`` and they were saved.

    Returns ``(generator, card)``; ``card["loaded_weights"]`` names the file actually loaded.
    """
    model_dir = Path(model_dir)
    card, config = read_card(model_dir)
    name = GENERATOR_EMA_FILE if use_ema and card["ema"] else GENERATOR_FILE
    g = build_generator(config)
    _load_into(g, model_dir / name)
    card = {**card, "loaded_weights": name}
    return g.to(device).eval(), card


def load_discriminator(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild D from ``model_dir`` in eval mode; returns ``(discriminator, card)``."""
    model_dir = Path(model_dir)
    card, config = read_card(model_dir)
    d = build_discriminator(config)
    _load_into(d, model_dir / DISCRIMINATOR_FILE)
    return d.to(device).eval(), card


def _load_into(module: nn.Module, path: Path) -> None:
    state = load_weights(path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the architecture in {CARD_FILE}: {exc}") from None


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelFileError(
            f"{path}: refusing to load a pickle-based file ({path.suffix}); unpickling can run arbitrary code. "
            "satgan models are a folder with model.json and .safetensors weights."
        )
