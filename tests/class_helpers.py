"""Test helper: generate's per-class outputs (samples/classes/), written by hand as the names module's contract says."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from satgan import names


def write_sample_classes(samples_dir: Path, classes: Sequence[str] = (), labels: Sequence[int] | None = None,
                         conditional: str | None = None) -> Path:
    """Write ``<samples_dir>/classes/classes.json`` (and ``labels.npy`` when given); returns the folder.

    ``conditional`` defaults to "none" without classes (an unconditional model) and "projection" with them.
    """
    folder = samples_dir / names.SAMPLES_CLASSES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    kind = conditional if conditional is not None else ("projection" if classes else "none")
    (folder / names.CLASSES_INFO).write_text(json.dumps({"conditional": kind, "classes": list(classes)}))
    if labels is not None:
        np.save(folder / names.SAMPLE_LABELS, np.asarray(labels, np.int64))
    return folder
