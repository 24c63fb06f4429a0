"""Test helpers for the train package: tiny params, prepared-array fixtures, trainers and weight comparison."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from satgan.params import from_mapping
from satgan.train import Dist, Trainer, TrainParams, model_config
from satgan.train.registry import HACKS

REPO = Path(__file__).resolve().parents[1]
ARRAY = np.random.default_rng(0).uniform(-1, 1, (20, 3, 32, 32)).astype(np.float32)
LABELS = np.arange(20, dtype=np.int64) % 3  # three classes for ARRAY's tiles
CONDITIONALS = ("projection", "acgan")


def tiny_params_dict(**top: Any) -> dict[str, Any]:
    """params.yaml's train section shrunk to tiny nets and a handful of iterations (a fresh dict)."""
    doc = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text())["train"])
    doc.update(iterations=6, batch_size=4, nz=8, ngf=4, ndf=4, n_samples=4, log_every=2, sample_every=3,
               checkpoint_every=2, device="cpu", threads=1)
    doc["hacks"]["replay"]["size"] = 16
    doc["hacks"]["instance_noise"]["decay_iters"] = 20
    doc.update(top)
    return doc


def set_hacks(doc: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """``doc`` with dotted hack keys set, e.g. ``set_hacks(doc, **{"replay.size": 8})``; returns ``doc``."""
    for key, value in overrides.items():
        node = doc["hacks"]
        *parents, leaf = key.split(".")
        for k in parents:
            node = node[k]
        node[leaf] = value
    return doc


def tiny_params(hacks: dict[str, Any] | None = None, **top: Any) -> TrainParams:
    """Typed tiny params; ``hacks`` maps dotted hack keys to values."""
    return from_mapping(TrainParams, set_hacks(tiny_params_dict(**top), **(hacks or {})), "train")


def every_hack_on(**top: Any) -> TrainParams:
    """Tiny params with every hack switched on but hinge_loss, which refuses soft_labels (swap every 2 steps for 1,
    two D and G steps, SGD for D, ADA moving p every 2 iterations, lazy R1 every 2, G's dropout kept at sampling)."""
    overrides: dict[str, Any] = {h.params_key.removeprefix("train.hacks."): h.name != "hinge_loss" for h in HACKS}
    overrides.update({"checkpoint_swap.every": 2, "checkpoint_swap.length": 1, "extra_steps.d_steps": 2,
                      "extra_steps.g_steps": 2, "moderated.max_extra_d_steps": 2, "l2_penalty.g": 0.01,
                      "l2_penalty.d": 0.01, "historical_averaging.weight": 0.01, "checkerboard.mode": "deconv_conv",
                      "diffaugment.ada.enabled": True, "diffaugment.ada.every": 2, "diffaugment.ada.speed_kimg": 0.1,
                      "diffaugment.p": 0.5, "r1.every": 2, "g_dropout.at_sampling": True})
    return tiny_params(overrides, **top)


def trainer(p: TrainParams | None = None, array: np.ndarray = ARRAY, labels: np.ndarray | None = None,
            **hack_overrides: Any) -> Trainer:
    """A CPU Trainer on ``array`` (20 random 32x32 tiles by default) with tiny params.

    A conditional ``p`` trains on ``labels`` (default: :data:`LABELS`, three classes).
    """
    p = p if p is not None else tiny_params(hack_overrides)
    if p.conditional != "none" and labels is None:
        labels = LABELS
    n_classes = int(labels.max()) + 1 if labels is not None else 0
    return Trainer(p, model_config(p, array.shape[2], array.shape[1], n_classes), array, torch.device("cpu"), Dist(),
                   labels)


def write_tiles(folder: Path, files: list[Path], size: int = 32) -> Path:
    """A prepared-array fixture: tiles.npy (N, 3, size, size) float16 in [-1, 1] plus its sidecar."""
    folder.mkdir(parents=True, exist_ok=True)
    imgs = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files]
    arr = (np.stack(imgs).transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1).astype(np.float16)
    np.save(folder / "tiles.npy", arr)
    meta = {"shape": list(arr.shape), "dtype": "float16", "channels": 3, "image_size": size, "value_range": [-1, 1]}
    (folder / "tiles.json").write_text(json.dumps(meta))
    return folder


def write_labelled_tiles(folder: Path, files: list[Path], size: int = 32) -> Path:
    """:func:`write_tiles` plus labels.npy (each file's folder is its class) and the sidecar's sorted ``classes``."""
    write_tiles(folder, files, size)
    classes = sorted({f.parent.name for f in files})
    np.save(folder / "labels.npy", np.array([classes.index(f.parent.name) for f in files], np.int64))
    meta = json.loads((folder / "tiles.json").read_text())
    (folder / "tiles.json").write_text(json.dumps({**meta, "classes": classes, "labels_file": "labels.npy"}))
    return folder


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder's safetensors files, keyed ``<file stem>.<tensor>``."""
    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update({f"{f.stem}.{k}": v for k, v in load_file(f).items()})
    return out


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs"


def run_dirs(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """(model, checkpoints, live) folders of one run under ``tmp/name``."""
    return tmp / name / "model", tmp / name / "ck", tmp / name / "live"
