"""What a reader needs to compare a benchmark figure: the machine it was measured on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe(full: bool = True) -> str:
    """CPU model and cores (and the GPU, if torch sees one); with ``full`` also OS, Python and torch versions."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass  # no /proc (macOS, Windows): platform's name stands
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    text = f"{model}, {os.cpu_count()} cores{gpu}"
    if full:
        text += f"; {platform.system()} {platform.release()}; Python {platform.python_version()}, torch {torch.__version__}"
    return text
