"""D's fixed high-pass input (issue 19) as inductor-compiled CPU kernels (issue 20).

:class:`satgan.model.HighPass` hands D an image and its residual ``x - blur(x)`` (a 3x3 binomial
blur with reflected borders). Eagerly that is a reflection pad, a depthwise 3-channel conv, a
subtraction and a concatenation, forward, and as many passes again backward: on a CPU with native
bf16 they cost ~20% of a default training step (``bench/train_bench.py``, docs/benchmarks.md),
although the op is a few adds per pixel. Here it is written as a separable stencil of shifted
slices, which inductor compiles into one fused pass; the op is linear, so its gradient is its
adjoint (:func:`pack_adjoint`), compiled the same way, and the adjoint's own gradient is the op
again, so any order of derivative (R1's double backward) stays on the compiled kernels.

Every function takes and returns (B, C, H, W) float tensors and computes in float32 (float64 for a
float64 input; the output has the input's dtype): the same values as the eager conv to float
rounding. :class:`FusedHighPass` decides per call between these kernels and the eager op, as
:class:`satgan.augment.FusedDiffAugment` does for DiffAugment (CPU, a C++ compiler, a batch of at
least ``min_elements``), and falls back to eager for good, saying why, if a compile fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from satgan.augment import COMPILE_MIN_ELEMENTS, cpp_compiler

Tensor = torch.Tensor


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


def _working_dtype(x: Tensor) -> torch.dtype:
    """float32 for bf16/fp16/float32 inputs, float64 for float64 ones."""
    return torch.promote_types(x.dtype, torch.float32)


def pack(x: Tensor, c: int) -> Tensor:
    """(B, C or 2C, H, W) -> (B, 2C, H, W): ``[main, source - blur(source)]``, where (main, source) are x's two halves,
    or x twice for C channels (:class:`satgan.model.HighPass`). H, W >= 2."""
    main, source = (x[:, :c], x[:, c:]) if x.shape[1] == 2 * c else (x, x)
    work = _working_dtype(x)
    s = source.to(work)
    residual = s - _blur1(_blur1(s, 2), 3)
    return torch.cat([main.to(work), residual], dim=1).to(x.dtype)


def pack_adjoint(g: Tensor, c: int, packed_input: bool) -> Tensor:
    """The transpose of :func:`pack` applied to ``g`` (B, 2C, H, W): (B, 2C, H, W) for a packed input, else (B, C, H, W)."""
    work = _working_dtype(g)
    g_main, g_res = g[:, :c].to(work), g[:, c:].to(work)
    g_source = g_res - _blur1_adjoint(_blur1_adjoint(g_res, 3), 2)
    out = torch.cat([g_main, g_source], dim=1) if packed_input else g_main + g_source
    return out.to(g.dtype)


# Compiled once per process (dynamo recompiles per input signature), shared by every HighPass.
_compiled: dict[str, Callable[..., Tensor]] = {}
_compiled_for: set[tuple[Any, ...]] = set()  # input signatures compiled so far (each logged once per process)


def _kernel(name: str) -> Callable[..., Tensor]:
    if name not in _compiled:
        _compiled[name] = torch.compile({"pack": pack, "adjoint": pack_adjoint}[name], dynamic=False)
    return _compiled[name]


class _Pack(torch.autograd.Function):
    """:func:`pack` compiled; its gradient is :class:`_Adjoint`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, c: int, fused: FusedHighPass) -> Tensor:  # type: ignore[override]
        ctx.c, ctx.packed, ctx.fused = c, x.shape[1] == 2 * c, fused
        return fused.run("pack", x.contiguous(), c)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return _Adjoint.apply(g, ctx.c, ctx.packed, ctx.fused), None, None


class _Adjoint(torch.autograd.Function):
    """:func:`pack_adjoint` compiled; its gradient is :class:`_Pack` (the transpose of a transpose)."""

    @staticmethod
    def forward(ctx: Any, g: Tensor, c: int, packed: bool, fused: FusedHighPass) -> Tensor:  # type: ignore[override]
        ctx.c, ctx.fused = c, fused
        return fused.run("adjoint", g.contiguous(), c, packed)

    @staticmethod
    def backward(ctx: Any, gg: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        return _Pack.apply(gg, ctx.c, ctx.fused), None, None, None


class FusedHighPass:
    """:func:`pack` and its gradient as inductor-compiled CPU kernels, for :class:`satgan.model.HighPass`.

    Used where :meth:`compiles` says so (a CPU tensor of at least ``min_elements``, a C++ compiler found,
    no compile failure so far); ``log`` (the trainer sets it) gets one line per input signature compiled,
    with the seconds it took, and one if a compile fails (then eager from there on).
    """

    def __init__(self, channels: int, min_elements: int = COMPILE_MIN_ELEMENTS,
                 log: Callable[[str], None] | None = None) -> None:
        self.channels, self.min_elements = channels, min_elements
        self.log = log or (lambda msg: None)
        self.compiler = cpp_compiler()
        self.why_eager: str | None = None if self.compiler else "no C++ compiler found (g++/c++/clang++ or $CXX) for inductor"

    def compiles(self, x: Tensor) -> bool:
        """Whether :meth:`__call__` on ``x`` runs the compiled kernels (a function of the shape, device and state only)."""
        return self.why_eager is None and x.device.type == "cpu" and x.numel() >= self.min_elements and min(x.shape[2:]) >= 2

    def __call__(self, x: Tensor) -> Tensor:
        """(B, C or 2C, H, W) -> (B, 2C, H, W): :func:`pack` on the compiled kernels, differentiable to any order."""
        return _Pack.apply(x, self.channels, self)

    def run(self, name: str, *args: Any) -> Tensor:
        """Kernel ``name`` ("pack" or "adjoint") on ``args``; the eager function if its compile fails (said once)."""
        x = args[0]
        key = (name, tuple(x.shape), x.dtype, *args[1:])
        t0 = time.perf_counter()
        fn = {"pack": pack, "adjoint": pack_adjoint}[name]
        if self.why_eager is not None:
            return fn(*args)
        try:
            with torch.autocast(x.device.type, enabled=False):
                out = _kernel(name)(*args)
        except Exception as exc:  # noqa: BLE001 - any inductor failure: stay correct, run eager
            self.why_eager = f"compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            self.log(f"D high-pass: eager from now on: {self.why_eager}")
            return fn(*args)
        if key not in _compiled_for:
            _compiled_for.add(key)
            self.log(f"D high-pass: {'gradient ' if name == 'adjoint' else ''}compiled with inductor for {list(x.shape)} "
                     f"{str(x.dtype).removeprefix('torch.')} in {time.perf_counter() - t0:.1f} s ({self.compiler})")
        return out
