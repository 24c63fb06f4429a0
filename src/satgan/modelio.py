"""Model files: safetensors weights + a JSON card. Never pickle.

``save_model(out_dir, ...)`` writes, each atomically:

- ``generator.safetensors``      G's raw (trained) state dict,
- ``generator_ema.safetensors``  the EMA of G's weights, only when EMA is on (use it for sampling),
- ``discriminator.safetensors``  D's state dict,
- ``model.json``                 ``format``, ``architecture`` (a :class:`~satgan.model.ModelConfig` dict,
  including the ``latent`` distribution G was trained on, and ``conditional`` / ``n_classes``),
  ``classes`` (a conditional model's class names, in label order; [] otherwise), ``nz``, ``ema`` (bool), ``files``,
  ``params_hash``, ``data_hash``, ``step``, ``git_rev`` (or null), ``git`` (:func:`git_state`), plus
  any extras and, when the trainer passes them, ``data`` + ``provenance`` (from the prepared
  sidecar), ``recipe`` and ``compute`` (:mod:`satgan.modelcard`),
- ``MODEL_CARD.md``              the human-readable card (:mod:`satgan.modelcard`), "not evaluated yet".

``load_generator(model_dir)`` rebuilds G from the card and loads the EMA weights when present.
Everything read is treated as foreign input, and every problem is one :class:`ModelFileError`
line naming the file and the field, never a traceback:

- a ``.pt``/``.pth``/``.pkl``/``.ckpt`` path is refused without opening it (unpickling runs code);
- the card is validated like params (every key present, no unknown architecture key, types,
  bounds such as ``ngf <= 256``, ``nz`` equal to ``architecture.nz``); a card written before
  the latent distribution was recorded (format ``satgan-dcgan/1``) is refused: retrain it; a
  ``satgan-dcgan/2`` card (before ``architecture.spectral_norm`` existed) is read as
  ``spectral_norm: false``, a ``/2`` or ``/3`` card (before ``architecture.g_dropout_at_sampling``)
  as ``g_dropout_at_sampling: false``, any card before ``/5`` as ``downsample: strided``,
  ``g_layer_noise: false`` and unconditional (``conditional: none``, ``n_classes: 0``,
  ``classes: []``), and any card before ``/6`` as ``g_bilinear_top: 0``, ``g_pixel_noise: 0``
  and ``d_highpass: false``, which is how every such model was built;
- a conditional card must name exactly ``n_classes`` distinct classes, and the class count its
  weights were built for (the class embedding's or classifier's rows) must be ``n_classes``;
- each weights file's tensor names and shapes are compared with the architecture from the
  safetensors header *before* anything is allocated, so a lying card cannot trigger a huge
  allocation;
- weights holding NaN or infinity are refused (sampling them gives garbage).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from satgan import modelcard, names
from satgan.errors import ModelFileError, ParamsError, SatganError
from satgan.fsutil import write_bytes_atomic, write_json_atomic
from satgan.model import ModelConfig, build_discriminator, build_generator
from satgan.params import check, from_mapping

GENERATOR_FILE = names.GENERATOR
GENERATOR_EMA_FILE = names.GENERATOR_EMA
DISCRIMINATOR_FILE = names.DISCRIMINATOR
CARD_FILE = names.MODEL_CARD
# /2: architecture.latent records G's latent distribution; /3: architecture.spectral_norm;
# /4: architecture.g_dropout_at_sampling; /5: architecture.downsample, g_layer_noise, conditional and
# n_classes, and the card's classes; /6: architecture.g_bilinear_top, g_pixel_noise and d_highpass (issue 19)
CARD_FORMAT = "satgan-dcgan/6"
OLD_CARD_FORMATS = ("satgan-dcgan/1",)
# Added in /6 (G's bilinear top layers and pixel noise, D's high-pass channels), as every model before it was built.
ADDED_IN_6: dict[str, Any] = {"g_bilinear_top": 0, "g_pixel_noise": 0, "d_highpass": False}
# Added in /5 (D's downsampling, G's layer noise, class conditioning), likewise.
ADDED_IN_5: dict[str, Any] = {"downsample": "strided", "g_layer_noise": False, "conditional": "none", "n_classes": 0,
                              **ADDED_IN_6}
# Architecture keys added since an older format, with the value every model of that format was built with.
CARD_UPGRADES: dict[str, dict[str, Any]] = {
    "satgan-dcgan/2": {"spectral_norm": False, "g_dropout_at_sampling": False, **ADDED_IN_5},
    "satgan-dcgan/3": {"g_dropout_at_sampling": False, **ADDED_IN_5},
    "satgan-dcgan/4": {**ADDED_IN_5},
    "satgan-dcgan/5": {**ADDED_IN_6},
}
# Top-level card keys added since an older format, likewise.
CARD_TOP_UPGRADES: dict[str, dict[str, Any]] = {fmt: {"classes": []} for fmt in CARD_UPGRADES}
MAX_CARD_BYTES = 1 << 20
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


@dataclass(frozen=True)
class CardFields:
    """The keys every model.json has (extras such as ``resumed`` or ``world_size`` pass through unchecked)."""

    format: str
    architecture: ModelConfig
    classes: tuple[str, ...]
    nz: int
    ema: bool
    files: dict[str, str | None]
    params_hash: str
    data_hash: str
    step: int
    git_rev: str | None

    def __post_init__(self) -> None:
        check("format", self.format == CARD_FORMAT, repr(CARD_FORMAT), self.format)
        n = self.architecture.n_classes
        check("classes", len(self.classes) == n,
              f"{n} class names (architecture.n_classes, conditional {self.architecture.conditional!r})", list(self.classes))
        check("classes", len(set(self.classes)) == len(self.classes), "distinct class names", list(self.classes))
        check("nz", self.nz == self.architecture.nz, f"architecture.nz ({self.architecture.nz})", self.nz)
        check("step", self.step >= 0, ">= 0", self.step)


MAX_DIRTY_PATHS = 20  # changed files listed in the card (the count is always exact)
GIT_STATE_KEYS = ("rev", "dirty_paths", "dirty_count", "experiment", "exp_ref")  # git_state's dict (checkpoints check it)
# Written by DVC itself during `dvc repro` (it records outputs, not code): a changed lock is not changed code.
DVC_WRITTEN = ("dvc.lock",)


def git_state(cwd: str | Path | None = None, env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Which code trained the model: ``rev``, ``dirty_paths``, ``dirty_count``, ``experiment``, ``exp_ref``; None outside git.

    ``dirty_paths``: tracked files that differ from ``rev`` (dvc.lock, which DVC rewrites while
    it runs the stages, excepted). Under ``dvc exp run`` (DVC sets ``DVC_EXP_NAME`` and
    ``DVC_EXP_BASELINE_REV`` for every stage it runs, dvc/repo/experiments/queue/base.py), the
    workspace is the baseline commit with the experiment's changes applied (its ``-S`` params,
    any uncommitted edits), and DVC commits exactly that as the experiment once the stages are
    done, under ``refs/exps/<baseline[:2]>/<baseline[2:]>/<name>`` (dvc/repo/experiments/refs.py).
    Then ``rev`` is the baseline, ``experiment`` the name and ``exp_ref`` that ref: the
    experiment's own commit, which ``git rev-parse`` resolves after the run.
    """
    env = dict(os.environ) if env is None else env
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "-z"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    # -z: "XY path\0", a rename adds "\0old path"; the entries we keep start with two status letters and a space.
    paths = [e[3:] for e in status.split("\0") if len(e) > 3 and e[2] == " "]
    dirty = [p for p in paths if Path(p).name not in DVC_WRITTEN]
    name = env.get("DVC_EXP_NAME") or None
    baseline = env.get("DVC_EXP_BASELINE_REV") or None
    state: dict[str, Any] = {**dict.fromkeys(GIT_STATE_KEYS), "rev": rev, "dirty_paths": dirty[:MAX_DIRTY_PATHS],
                             "dirty_count": len(dirty)}
    if name is not None and baseline is not None:
        state.update(rev=baseline, experiment=name, exp_ref=f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}")
    return state


def git_revision(cwd: str | Path | None = None, state: dict[str, Any] | None = None) -> str | None:
    """The revision that names the training code: the experiment's ref under ``dvc exp run``, else HEAD
    (with ``-dirty`` when tracked files other than dvc.lock changed); None outside git.
    """
    state = git_state(cwd) if state is None else state
    if state is None:
        return None
    if state["exp_ref"] is not None:
        return str(state["exp_ref"])
    return state["rev"] + ("-dirty" if state["dirty_count"] else "")


def state_dict_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous CPU copy of ``module``'s state dict (safetensors needs contiguous tensors)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_weights(path: str | Path, module_or_state: nn.Module | dict[str, torch.Tensor]) -> None:
    """Write a state dict as safetensors, atomically, with the umask's mode like every other output.

    ``safetensors.torch.save_file`` recreates its file with mode 0600 whatever the umask (unreadable
    to the rest of a shared workspace); serialising to bytes (:func:`safetensors.torch.save`) and
    writing them with :func:`satgan.fsutil.write_bytes_atomic` keeps the same format and mode rules.
    """
    state = state_dict_cpu(module_or_state) if isinstance(module_or_state, nn.Module) else module_or_state
    write_bytes_atomic(path, safetensors_bytes(state))


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
    data_meta: dict[str, Any] | None = None,
    train_params: Any = None,
    wall_seconds: float | None = None,
    untimed_steps: int = 0,
    git: dict[str, Any] | None | Literal["here"] = "here",
    classes: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the model files into ``out_dir`` (created); returns the card written as model.json.

    ``classes``: a conditional model's class names, in label order (``config.n_classes`` of them).

    The card is written last, so a folder whose model.json names a step has all its weights;
    ``MODEL_CARD.md`` follows it. For a complete card the trainer passes ``data_meta`` (the
    prepared tiles' sidecar: counts and the provenance block), ``train_params`` (the ``train``
    section, for the recipe) and ``wall_seconds`` (the training time of every run that led to
    these weights, a resumed one's earlier runs included); without them those parts of the card
    read "not recorded". ``untimed_steps``: how many of the first steps were trained before
    checkpoints recorded their time (a resumed old checkpoint): ``wall_seconds`` then covers only
    the others, and the card says the total is unknown.

    ``git``: :func:`git_state` of the code that trained the weights; "here" (the default) takes
    it from the working tree this runs in. The trainer passes its own, which is a checkpoint's
    when it resumed at the final step and trained nothing.
    """
    if len(classes) != config.n_classes:
        raise ValueError(f"save_model: {len(classes)} class names for a model with n_classes={config.n_classes}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / GENERATOR_FILE, generator)
    if generator_ema is not None:
        save_weights(out / GENERATOR_EMA_FILE, generator_ema)
    else:
        (out / GENERATOR_EMA_FILE).unlink(missing_ok=True)  # never leave a stale EMA next to new weights
    save_weights(out / DISCRIMINATOR_FILE, discriminator)
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "architecture": config.to_dict(),
        "classes": [str(c) for c in classes],
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
        **(extra or {}),
    }
    git = git_state() if git == "here" else git
    card["git_rev"] = git_revision(state=git) if git is not None else None
    card["git"] = git
    if data_meta is not None:
        card["data"] = {"train_tiles": int(data_meta["shape"][0]), "image_size": data_meta["image_size"],
                        "channels": data_meta["channels"],
                        "holdout_tiles": data_meta["holdout_split"]["holdout"] if "holdout_split" in data_meta else None}
        if "provenance" in data_meta:
            card["provenance"] = data_meta["provenance"]
    if train_params is not None:
        card["recipe"] = modelcard.recipe(train_params)
    compute: dict[str, Any] = {"steps": int(step)}
    if wall_seconds is not None:
        # untimed_steps is always written with a time: it says the time spans every run (a model.json
        # written before it holds a resumed run's last part only). With untimed steps the total is unknown:
        # no wall_seconds (which readers take for the whole), the known part as timed_seconds.
        compute["untimed_steps"] = int(untimed_steps)
        compute["wall_seconds" if untimed_steps == 0 else "timed_seconds"] = round(float(wall_seconds), 1)
    card["compute"] = compute
    write_json_atomic(out / CARD_FILE, card)
    modelcard.write(out, card)
    return card


def read_card(model_dir: str | Path) -> tuple[dict[str, Any], ModelConfig]:
    """Read and validate model.json; returns ``(card, ModelConfig)``. Refuses pickle paths."""
    model_dir = Path(model_dir)
    _refuse_pickle(model_dir)
    if model_dir.is_file():
        raise ModelFileError(f"{model_dir}: expected a model folder (with {CARD_FILE} and .safetensors files)")
    card_path = model_dir / CARD_FILE
    if not card_path.is_file():
        pickles = sorted(p.name for p in model_dir.glob("*") if p.suffix in PICKLE_SUFFIXES) if model_dir.is_dir() else []
        hint = f" (found {pickles}: pickle files are refused, use satgan's safetensors format)" if pickles else ""
        raise ModelFileError(f"{card_path}: model card not found{hint}")
    if card_path.stat().st_size > MAX_CARD_BYTES:
        raise ModelFileError(f"{card_path}: {card_path.stat().st_size} bytes is too large for a model card (at most {MAX_CARD_BYTES})")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{card_path}: not valid JSON: {exc}") from None
    if isinstance(card, dict) and "format" in card and card["format"] in OLD_CARD_FORMATS:
        raise ModelFileError(
            f"{card_path}: format {card['format']!r} was written by an older satgan that did not record the latent "
            "distribution G was trained on; retrain the model (`dvc repro train`) to sample it"
        )
    if isinstance(card, dict) and "format" in card and card["format"] in CARD_UPGRADES:
        card = _upgraded(card)
    fields = CardFields.__dataclass_fields__
    subset = {k: v for k, v in card.items() if k in fields} if isinstance(card, dict) else card
    try:
        checked = from_mapping(CardFields, subset, key="card", file=card_path)
    except ParamsError as exc:
        # from_mapping names keys under a section; a card has none, so drop the placeholder
        raise ModelFileError(str(exc).replace(f"{card_path}: card.", f"{card_path}: ", 1)) from None
    return card, checked.architecture


def _upgraded(card: dict[str, Any]) -> dict[str, Any]:
    """An older card in the current format: the keys added since get the value its nets were built with.

    A key the card already has is kept, so a card that was edited by hand is validated as it is.
    """
    new = {**CARD_TOP_UPGRADES[card["format"]], **card, "format": CARD_FORMAT, "upgraded_from": card["format"]}
    if "architecture" in card and isinstance(card["architecture"], dict):
        new["architecture"] = {**CARD_UPGRADES[card["format"]], **card["architecture"]}
    return new


def load_generator(model_dir: str | Path, use_ema: bool = True, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild G from ``model_dir`` in eval mode; EMA weights when ``use_ema`` and they were saved.

    Returns ``(generator, card)``; ``card["loaded_weights"]`` names the file actually loaded.
    """
    model_dir = Path(model_dir)
    card, config = read_card(model_dir)
    name = GENERATOR_EMA_FILE if use_ema and card["ema"] else GENERATOR_FILE
    _check_shapes(build_generator, config, model_dir / name)
    g = build_generator(config)
    _load_into(g, model_dir / name)
    card = {**card, "loaded_weights": name}
    return g.to(device).eval(), card


def load_discriminator(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild D from ``model_dir`` in eval mode; returns ``(discriminator, card)``."""
    model_dir = Path(model_dir)
    card, config = read_card(model_dir)
    _check_shapes(build_discriminator, config, model_dir / DISCRIMINATOR_FILE)
    d = build_discriminator(config)
    _load_into(d, model_dir / DISCRIMINATOR_FILE)
    return d.to(device).eval(), card


def class_indices(card: dict[str, Any], chosen: Sequence[str] | None, what: str,
                  error: type[SatganError] = SatganError) -> list[int]:
    """The label indices of the ``chosen`` class names among the model's classes (``card["classes"]``), in the order given.

    ``chosen`` None: every class of a conditional model, and [] for an unconditional one. Asking an
    unconditional model for classes, naming a class it does not have or naming one twice is one
    ``error`` naming ``what`` (the params key or flag that asked) and, for a wrong name, the
    model's classes.
    """
    classes = list(card["classes"])
    conditional = card["architecture"]["conditional"]
    if chosen is None:
        return list(range(len(classes)))
    if conditional == "none":
        raise error(f"{what}: asks for classes {list(chosen)}, but this model is unconditional ({CARD_FILE}: "
                    "conditional 'none'); it was trained without labels, so it has no classes to choose from")
    if not chosen:
        raise error(f"{what}: expected at least one class name (the model's classes: {', '.join(classes)})")
    unknown = [c for c in chosen if c not in classes]
    if unknown:
        raise error(f"{what}: unknown class {unknown[0]!r}; the model's classes are: {', '.join(classes)}")
    repeated = sorted({c for c in chosen if list(chosen).count(c) > 1})
    if repeated:
        raise error(f"{what}: class {repeated[0]!r} is named more than once")
    return [classes.index(c) for c in chosen]


def spread_labels(n: int, indices: Sequence[int]) -> torch.Tensor:
    """``n`` class labels (int64) spread evenly over ``indices``: row i gets ``indices[i % len(indices)]``.

    Round robin, so every class gets ``n // K`` rows and the first ``n % K`` classes (in the order
    given) one more; row i's class does not depend on ``n``.
    """
    idx = torch.as_tensor(list(indices), dtype=torch.int64)
    return idx[torch.arange(n) % len(idx)]


def _load_into(module: nn.Module, path: Path) -> None:
    state = load_weights(path)
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(f"{path}: tensor {name!r} holds NaN or infinite values (did training diverge?); refusing to use it")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        msg = " ".join(str(exc).split())
        raise ModelFileError(f"{path}: weights do not match the architecture in {CARD_FILE}: {msg}") from None


def _check_shapes(build: Callable[[ModelConfig], nn.Module], config: ModelConfig, path: Path) -> None:
    """Compare ``path``'s tensor names and shapes (safetensors header only) with ``build(config)`` on the meta device.

    Nothing is allocated: a card whose architecture disagrees with its weights (or asks for a
    far larger net than the file holds) is refused before any network is built.
    """
    _refuse_pickle(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build(config).state_dict().items()}
    try:
        with safe_open(str(path), framework="pt") as fh:
            found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable safetensors file: {exc}") from None
    have, need = _class_count(found), _class_count(expected)
    if have != need:
        held = f"{have} classes" if have else "an unconditional model (no class embedding or classifier)"
        raise ModelFileError(
            f"{path}: the weights are for {held} but {CARD_FILE} says conditional={config.conditional!r}, "
            f"n_classes={config.n_classes}: the card does not belong to these weights"
        )
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        what = f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {extra[0]!r}"
        raise ModelFileError(f"{path}: {what} for the architecture in {CARD_FILE}")
    for k, shape in expected.items():
        if found[k] != shape:
            raise ModelFileError(
                f"{path}: tensor {k!r} has shape {list(found[k])} but the architecture in {CARD_FILE} "
                f"(nz={config.nz}, ngf={config.ngf}, ndf={config.ndf}, image_size={config.image_size}) needs {list(shape)}"
            )


# The tensors whose first dimension is the class count: G's and a projection D's class embedding, an
# acgan D's classifier (spectrally normalized: its parametrization's original weight).
_CLASS_TENSORS = ("embed.weight", "embed.parametrizations.weight.original",
                  "classifier.weight", "classifier.parametrizations.weight.original")


def _class_count(shapes: dict[str, tuple[int, ...]]) -> int:
    """The classes a state dict's shapes were built for: rows of its class embedding or classifier; 0 without one."""
    for name in _CLASS_TENSORS:
        if name in shapes and len(shapes[name]) >= 1:
            return int(shapes[name][0])
    return 0


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelFileError(
            f"{path}: refusing to load a pickle-based file ({path.suffix}); unpickling can run arbitrary code. "
            "satgan models are a folder with model.json and .safetensors weights."
        )
