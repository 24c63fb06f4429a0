"""Which numeric path a training run takes: bf16 autocast or plain fp32, and the memory layout.

- CUDA: bf16 autocast when ``train.amp``; channels_last when ``train.channels_last``.
- CPU: always channels_last (NHWC), the layout oneDNN's convolutions run fastest in, in fp32 as
  in bf16; ``train.cpu_bf16``: ``auto`` trains under ``torch.autocast("cpu", dtype=torch.bfloat16)``
  when the CPU executes bf16 natively (AVX512-BF16 or AMX-BF16, through oneDNN) and stays fp32
  otherwise, where bf16 is emulated and slower than fp32; ``on`` forces bf16 (for tests and
  comparisons), ``off`` forces fp32. Weights, optimizer state, losses and the EMA stay fp32 under
  autocast.

On 2 cores of a CPU with AVX512-BF16, DCGAN-64 (ngf 16, batch 64) trains about 1.5x faster
under bf16 + channels_last than in fp32 NCHW; on a CPU without native bf16 (AVX2), fp32 +
channels_last trains the default recipe 1.3x faster than fp32 NCHW: G's bilinear output layer
(upsampling + a 16 -> 3 channel conv) runs 2.9x faster in NHWC (docs/benchmarks.md). A rerun with the same params
is still bit-identical (oneDNN's kernels are deterministic for a fixed thread count).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bf16 arithmetic


@dataclass(frozen=True)
class Precision:
    """The numeric path: ``autocast_device`` ("cuda", "cpu" or None = fp32), channels_last, and why (for the log)."""

    autocast_device: str | None
    channels_last: bool
    reason: str

    @property
    def bf16(self) -> bool:
        return self.autocast_device is not None

    def autocast(self) -> Callable[[], AbstractContextManager[object]]:
        """A factory of the context each forward runs in: bf16 autocast on this path's device, or a no-op."""
        if self.autocast_device is None:
            return contextlib.nullcontext
        device = self.autocast_device
        return lambda: torch.autocast(device, dtype=torch.bfloat16)

    def describe(self) -> str:
        layout = " + channels_last" if self.channels_last else ""
        return f"{'bf16 autocast' if self.bf16 else 'fp32'}{layout} ({self.reason})"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is missing or unreadable)."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def native_cpu_bf16(flags: set[str] | None = None) -> str | None:
    """What makes bf16 native on this CPU (e.g. ``"avx512_bf16"``), or None where it would be emulated.

    Reads /proc/cpuinfo's flags; where it is unavailable, asks torch's own CPU probe. Either
    way oneDNN must be built in, as it runs the bf16 convolutions.
    """
    if not torch.backends.mkldnn.is_available():
        return None
    flags = cpu_flags() if flags is None else flags
    found = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if found:
        return "+".join(found)
    if not flags:
        probes = (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_bf16", "_is_amx_tile_supported"))
        for name, probe in probes:
            fn = getattr(torch.cpu, probe, None)
            if fn is not None and fn():
                return name
    return None


def choose_precision(device: torch.device, amp: bool, cpu_bf16: str, channels_last: bool,
                     detect: Callable[[], str | None] = native_cpu_bf16) -> Precision:
    """The path for ``device`` under the params ``amp`` (CUDA), ``cpu_bf16`` (CPU) and ``channels_last`` (CUDA; a CPU
    is always channels_last).

    ``detect``: names the CPU's native bf16 feature or returns None (:func:`native_cpu_bf16`).
    """
    if device.type == "cuda":
        return Precision("cuda" if amp else None, channels_last, "CUDA, amp on" if amp else "CUDA, amp off")
    # ``channels_last`` (the param) is CUDA's: on a CPU NHWC is faster in both precisions (module docstring).
    if cpu_bf16 == "off":
        return Precision(None, True, "CPU, cpu_bf16=off")
    if cpu_bf16 == "on":
        return Precision("cpu", True, "CPU, cpu_bf16=on")
    native = detect()
    if native:
        return Precision("cpu", True, f"CPU with native bf16 ({native}), cpu_bf16=auto")
    return Precision(None, True, "CPU without native bf16 (no avx512_bf16/amx_bf16), cpu_bf16=auto")
