"""Fixed linear image ops of the nets as inductor-compiled CPU kernels, with their adjoints (issue 20).

D's high-pass input (:class:`satgan.model.HighPass`: the image and its residual ``x - blur(x)``, a
3x3 binomial blur with reflected borders; issue 19) is a fixed linear map that eager PyTorch runs
as a reflection pad, a depthwise 3-channel conv, a subtraction and concatenations, and as many
passes again for its gradient: ~20% of a default training step on a CPU with native bf16
(``bench/train_bench.py``, docs/benchmarks.md). Here it is a separable stencil of zero-padded
shifts, which inductor compiles into one fused pass; the gradient of a linear op is its adjoint,
written and compiled the same way (and the adjoint's gradient is the op again, so any order of
derivative, R1's double backward included, stays on the kernels). G's bilinear upsampling was
tried the same way and is not here: its compiled adjoint ran 4x slower than eager's
(docs/benchmarks.md).

- :func:`pack` and its adjoint :func:`pack_adjoint`: pure functions on (B, C, H, W) tensors,
  computed in float32 (float64 for float64 input), returned in the input's dtype; equal to the
  eager op to float rounding (tests/test_kernels.py).
- :class:`FusedOp`: a linear op and its adjoint on the compiled kernels, used where :meth:`FusedOp.compiles` says so
  (a CPU batch of at least :data:`COMPILE_MIN_ELEMENTS`, a C++ compiler found by
  :func:`cpp_compiler`, no compile failure so far); the modules fall back to their eager op
  otherwise. DiffAugment has its own compiled path (:class:`satgan.augment.FusedDiffAugment`)
  and shares :func:`cpp_compiler` and :data:`COMPILE_MIN_ELEMENTS`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# Below this many elements per call the compiled kernels gain little over eager's, and the
# compile (seconds per input signature) would dominate a short run such as the tests' tiny ones.
COMPILE_MIN_ELEMENTS = 2**17


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would build CPU kernels with (``$CXX``, else g++/c++/clang++ on PATH), or None."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def _working_dtype(x: Tensor) -> torch.dtype:
    """float32 for bf16/fp16/float32 inputs, float64 for float64 ones."""
    return torch.promote_types(x.dtype, torch.float32)


def _neighbours(x: Tensor, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """(index along ``dim``, x[i-1], x[i+1]) with 0 past either end; zero padding and a slice, so inductor fuses them
    into the caller's pass as offset loads (a ``torch.cat`` of slices would be copied into a buffer first)."""
    n = x.shape[dim]
    before = [0, 0] * (x.ndim - 1 - dim)
    prev = F.pad(x, [*before, 1, 0]).narrow(dim, 0, n)
    nxt = F.pad(x, [*before, 0, 1]).narrow(dim, 1, n)
    shape = [1] * x.ndim
    shape[dim] = n
    return torch.arange(n, device=x.device).view(shape), prev, nxt


# ------------------------------------------------------------------ D's high-pass input


def _blur1(x: Tensor, dim: int) -> Tensor:
    """(x[i-1] + 2 x[i] + x[i+1]) / 4 along ``dim``, reflected at the ends (x[-1] = x[1], x[n] = x[n-2]); n >= 2."""
    i, prev, nxt = _neighbours(x, dim)
    n = x.shape[dim]
    return (torch.where(i == 0, nxt, prev) + 2.0 * x + torch.where(i == n - 1, prev, nxt)) * 0.25


def _blur1_adjoint(g: Tensor, dim: int) -> Tensor:
    """The transpose of :func:`_blur1` along ``dim``: the same stencil with zeros past the ends, plus the reflection's
    extra quarter (x[1] also stands in for x[-1], so position 1 gets g[0] / 4; position n-2 gets g[n-1] / 4)."""
    i, prev, nxt = _neighbours(g, dim)
    n = g.shape[dim]
    extra = torch.where(i == 1, g.narrow(dim, 0, 1), 0.0) + torch.where(i == n - 2, g.narrow(dim, n - 1, 1), 0.0)
    return (prev + 2.0 * g + nxt + extra) * 0.25


def pack(x: Tensor, c: int) -> Tensor:
    """(B, C or 2C, H, W) -> (B, 2C, H, W): ``[main, source - blur(source)]``, where (main, source) are x's two halves,
    or x twice for C channels (:class:`satgan.model.HighPass`). H, W >= 2."""
    main, source = (x[:, :c], x[:, c:]) if x.shape[1] == 2 * c else (x, x)
    work = _working_dtype(x)
    s = source.to(work)
    residual = s - _blur1(_blur1(s, 2), 3)
    return torch.cat([main.to(work), residual], dim=1).to(x.dtype)


def pack_adjoint(g: Tensor, in_channels: int, c: int) -> Tensor:
    """The transpose of :func:`pack` applied to ``g`` (B, 2C, H, W): (B, ``in_channels``, H, W), C or 2C."""
    work = _working_dtype(g)
    g_main, g_res = g[:, :c].to(work), g[:, c:].to(work)
    g_source = g_res - _blur1_adjoint(_blur1_adjoint(g_res, 3), 2)
    out = torch.cat([g_main, g_source], dim=1) if in_channels == 2 * c else g_main + g_source
    return out.to(g.dtype)


# Compiled once per process and function (dynamo recompiles per input signature), shared by every module.
_compiled: dict[Callable[..., Tensor], Callable[..., Tensor]] = {}
_compiled_for: set[tuple[Any, ...]] = set()  # input signatures compiled so far (each logged once per process)


class _Apply(torch.autograd.Function):
    """The op on its compiled kernel; its gradient is :class:`_Transpose`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, op: FusedOp) -> Tensor:  # type: ignore[override]
        ctx.op, ctx.in_channels = op, x.shape[1]
        return op.run(False, x)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return _Transpose.apply(g, ctx.op, ctx.in_channels), None


class _Transpose(torch.autograd.Function):
    """The op's adjoint on its compiled kernel; its gradient is :class:`_Apply` (the transpose of a transpose)."""

    @staticmethod
    def forward(ctx: Any, g: Tensor, op: FusedOp, in_channels: int) -> Tensor:  # type: ignore[override]
        ctx.op = op
        return op.run(True, g, in_channels)

    @staticmethod
    def backward(ctx: Any, gg: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return _Apply.apply(gg, ctx.op), None, None


class FusedOp:
    """A fixed linear op, ``forward(x, *args)``, and its gradient, ``adjoint(g, in_channels, *args)``, as
    inductor-compiled CPU kernels; ``label`` names it in the log.

    ``log`` (the trainer sets it) gets one line per input signature compiled, with the seconds it
    took, and one if a compile fails (then eager from there on, for this object).
    """

    def __init__(self, forward: Callable[..., Tensor], adjoint: Callable[..., Tensor], label: str, *args: Any,
                 min_elements: int = COMPILE_MIN_ELEMENTS, log: Callable[[str], None] | None = None) -> None:
        self.forward, self.adjoint, self.label = forward, adjoint, label
        self.args, self.min_elements = args, min_elements
        self.log = log or (lambda msg: None)
        self.compiler = cpp_compiler()
        self.why_eager: str | None = None if self.compiler else "no C++ compiler found (g++/c++/clang++ or $CXX) for inductor"

    def compiles(self, x: Tensor) -> bool:
        """Whether :meth:`__call__` on ``x`` runs the compiled kernels (a function of the shape, device and state only)."""
        return (self.why_eager is None and x.device.type == "cpu" and x.numel() >= self.min_elements
                and x.ndim == 4 and min(x.shape[2:]) >= 2)

    def __call__(self, x: Tensor) -> Tensor:
        """The op on ``x`` on the compiled kernels, differentiable to any order."""
        return _Apply.apply(x, self)

    def run(self, transpose: bool, t: Tensor, *in_channels: int) -> Tensor:
        """The op (or, ``transpose``, its adjoint) on ``t``; the eager function where its compile fails (said once)."""
        fn = self.adjoint if transpose else self.forward
        args = (*in_channels, *self.args)
        # inductor vectorises along the innermost dimension, which channels_last makes a 3- or 6-channel image's
        # colours: the kernels read an NCHW copy (one pass)
        t = t.contiguous()
        if self.why_eager is not None:
            return fn(t, *args)
        key = (fn, tuple(t.shape), t.dtype, *args)
        t0 = time.perf_counter()
        try:
            if fn not in _compiled:
                _compiled[fn] = torch.compile(fn, dynamic=False)
            with torch.autocast(t.device.type, enabled=False):
                out = _compiled[fn](t, *args)
        except Exception as exc:  # noqa: BLE001 - any inductor failure: stay correct, run eager
            self.why_eager = f"compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            self.log(f"{self.label}: eager from now on: {self.why_eager}")
            return fn(t, *args)
        if key not in _compiled_for:
            _compiled_for.add(key)
            self.log(f"{self.label}: {'gradient ' if transpose else ''}compiled with inductor for {list(t.shape)} "
                     f"{str(t.dtype).removeprefix('torch.')} in {time.perf_counter() - t0:.1f} s ({self.compiler})")
        return out
