"""Test helper: real RSSCN7 JPEGs as the (N, C, H, W) [-1, 1] arrays the metrics and judge take."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def load_tiles(files: list[Path], size: int = 32, blur: float = 0.0) -> np.ndarray:
    """Real JPEGs -> (N, 3, size, size) float32 in [-1, 1], optionally Gaussian-blurred after resizing."""
    out = []
    for f in files:
        im = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
        if blur:
            im = im.filter(ImageFilter.GaussianBlur(blur))
        out.append(np.asarray(im, np.float32))
    return np.stack(out).transpose(0, 3, 1, 2) / 127.5 - 1.0
