"""DiffAugment's default policy as a hand-written CPU kernel, forward and gradient, and the dihedral flips (issue 20).

Inductor's kernels for ``("color", "translation", "cutout")`` (:class:`satgan.augment.FusedDiffAugment`)
took ~2 ms forward and ~3.4 ms backward per 64x3x64x64 call at 1 thread, ~15% of a default CPU step:
they keep the colour result in a buffer for contrast's mean and gather translation's columns one
scalar at a time (docs/benchmarks.md). The whole policy is an affine map per image, so ``augment_kernel.cpp`` runs it in two passes over
each image while it sits in cache: the image mean that contrast needs (the colour ops keep it but
for brightness's offset), then each output row read once from its source row at the image's shift,
its channels in registers, colour ops applied, cutout's span zeroed. The gradient is the transpose,
in two passes the same way (the sum that contrast's mean spreads back, then each source row)::

    b = x + beta                          brightness
    s = b + (b - mean_c b) * sigma        saturation (mean over channels, per pixel)
    k = s + (s - mean s) * kappa          contrast   (mean over the image: mean s = mean x + beta)
    y = cutout(shift(k, dy, dx))

    g_k = shift(cutout(g), -dy, -dx)
    g_s = (1 + kappa) g_k - kappa * mean(g_k)
    g_x = (1 + sigma) g_s - sigma * mean_c g_s

with beta, sigma and kappa zero where the op was not drawn. The kernel is built once per process
with the C++ compiler inductor would use (:func:`satgan.kernels.cpp_compiler`, 2-4 s, said in the log) into a
temporary folder and loaded with :mod:`ctypes`; nothing is left on disk. It reads float32 or
bfloat16 (N, C, H, W) in NCHW or channels_last (the trainer's layout, kept: no copy), computes in
float32 and writes the input's dtype and layout. It splits the batch's images between torch's
threads (``torch.get_num_threads()``), each image computed whole by one, with OpenMP: built with
``-fopenmp``, the library names ``libgomp.so.1``, which the loader resolves to the runtime torch
has already loaded (its wheels ship libgomp under that name), so these are torch's own pool
threads under satgan's wait policy (:mod:`satgan.openmp`), and no second runtime's threads
compete with them (a ``std::thread`` split did, and made the step slower). It has no fast-math,
so a rerun is bit-identical and the result does not depend on the thread count.
:class:`satgan.augment.FusedDiffAugment` calls it (with the eager transpose for a double backward,
R1's penalty) where it applies; tests/test_augment_kernel.py holds it to eager DiffAugment.

The same library holds the dihedral flips of the real batch (:meth:`Kernel.dihedral`, for
:func:`satgan.train.hacks.dihedral_augment`) as one copy per pixel, reading either layout and
writing the one the trainer wants: torch's gather and a layout change took ~2.9 ms per batch.
"""

from __future__ import annotations

import ctypes
import functools
import subprocess
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch

from satgan.kernels import cpp_compiler

Tensor = torch.Tensor

DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16"}
SOURCE = "augment_kernel.cpp"


class BuildError(RuntimeError):
    """The kernel could not be built or loaded (the compiler's last line says why)."""


def openmp_flags(compiler: str) -> list[str]:
    """``["-fopenmp"]`` for GCC, whose ``libgomp.so.1`` is the runtime torch's Linux wheels load (so the loader reuses
    torch's); none for other compilers, whose OpenMP (clang's libomp) would be a second pool beside torch's: the
    kernel then runs on one thread, as the pragma is ignored."""
    done = subprocess.run([compiler, "-dM", "-E", "-x", "c++", "/dev/null"], capture_output=True, text=True,
                          check=False)
    gcc = done.returncode == 0 and "__GNUC__" in done.stdout and "__clang__" not in done.stdout
    return ["-fopenmp"] if gcc else []


def build(compiler: str) -> ctypes.CDLL:
    """Compile :data:`SOURCE` with ``compiler`` into a temporary folder and load it; :class:`BuildError` if that fails.

    ``-march=native`` first (the kernel runs on the machine that builds it), then without it for
    compilers that do not know the flag; OpenMP (:func:`openmp_flags`) first, then without it.
    """
    source = resources.files("satgan").joinpath(SOURCE).read_text()
    omp = openmp_flags(compiler)
    tries = [[*arch, *o] for o in ([omp, []] if omp else [[]]) for arch in (["-march=native"], [])]
    with tempfile.TemporaryDirectory(prefix="satgan-augment-") as tmp:
        src, lib = Path(tmp) / SOURCE, Path(tmp) / "augment_kernel.so"
        src.write_text(source)
        errors = ""
        for flags in tries:
            cmd = [compiler, "-O3", *flags, "-std=c++17", "-shared", "-fPIC", str(src), "-o", str(lib)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode == 0:
                try:
                    return ctypes.CDLL(str(lib))  # mapped now: the file may go with the folder
                except OSError as exc:
                    raise BuildError(f"could not load the built kernel: {exc}") from exc
            errors = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    raise BuildError(f"{compiler} failed: {errors[:200]}")


class Draws(NamedTuple):
    """One call's augmentation as the kernel reads it: float32 / int32 (N,) contiguous tensors and the cutout size."""

    beta: Tensor  # brightness offset
    sigma: Tensor  # saturation factor - 1
    kappa: Tensor  # contrast factor - 1
    dy: Tensor  # translation, rows (out[i] = in[i - dy])
    dx: Tensor  # translation, columns
    cy: Tensor  # cutout's top row in the output (may be negative: the square is clipped)
    cx: Tensor  # cutout's left column
    cut: Tensor  # 1 where cutout applies
    ch: int  # cutout's height
    cw: int  # cutout's width


class Kernel:
    """The built kernel: :meth:`forward` and :meth:`backward` on (N, C, H, W) float32/bfloat16 tensors, returned in
    their layout when that is channels_last, else NCHW."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.fns = {}
        for way in ("forward", "backward"):
            for dtype, tag in DTYPES.items():
                fn = getattr(lib, f"satgan_da_{way}_{tag}")
                fn.restype = None
                fn.argtypes = ([ctypes.c_void_p] * 2 + [ctypes.c_int] * 6 + [ctypes.c_void_p] * 8 + [ctypes.c_int] * 2)
                self.fns[way, dtype] = fn
        self.dihedral_fns = {}
        for size in (2, 4):  # element bytes: bf16/fp16, float32 (a copy of the bits)
            fn = getattr(lib, f"satgan_dihedral_{size}")
            fn.restype = None
            fn.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int] * 7 + [ctypes.c_void_p] * 3
            self.dihedral_fns[size] = fn

    def _run(self, way: str, t: Tensor, d: Draws) -> Tensor:
        # channels_last as it comes (the trainer's layout: no copy either way), anything else as an NCHW copy
        nhwc = t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
        t = t if nhwc else t.contiguous()
        out = torch.empty_like(t)  # the input's layout
        self.fns[way, t.dtype](t.data_ptr(), out.data_ptr(), torch.get_num_threads(), int(nhwc), *t.shape,
                               *(a.data_ptr() for a in d[:8]), d.ch, d.cw)
        return out

    def forward(self, x: Tensor, d: Draws) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W): the policy applied with ``d``."""
        return self._run("forward", x, d)

    def dihedral(self, x: Tensor, maps: Tensor, channels_last: bool) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W), H = W, 2- or 4-byte elements: output pixel i * W + j of image n is input pixel
        ``maps[n, 0] + i * maps[n, 1] + j * maps[n, 2]`` ((N, 3) int32), in channels_last or NCHW as asked."""
        nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        x = x if nhwc else x.contiguous()
        out = torch.empty(x.shape, dtype=x.dtype, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        maps = maps.to(torch.int32).t().contiguous()
        self.dihedral_fns[x.element_size()](x.data_ptr(), out.data_ptr(), torch.get_num_threads(), int(nhwc),
                                            int(channels_last), *x.shape, *(m.data_ptr() for m in maps))
        return out

    def backward(self, g: Tensor, d: Draws) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W): the gradient of :meth:`forward` with respect to x, given ``g`` for its output."""
        return self._run("backward", g, d)


_built: dict[str, Kernel | BuildError] = {}  # per compiler, once per process


@functools.cache
def _default_compiler() -> str | None:
    """:func:`~satgan.kernels.cpp_compiler`, looked up once per process (the dihedral flips ask for the kernel every
    step: a PATH search each time would be work on the hot path)."""
    return cpp_compiler()


def load(compiler: str | None = None, log: Callable[[str], None] | None = None) -> Kernel:
    """The kernel built with ``compiler`` (default :func:`~satgan.kernels.cpp_compiler`), built on the first call for
    that compiler, which tells ``log`` how long it took; :class:`BuildError` without a compiler or when the build
    fails (again on every later call)."""
    compiler = compiler or _default_compiler()
    if compiler is None:
        raise BuildError("no C++ compiler found (g++/c++/clang++ or $CXX)")
    if compiler in _built:
        found = _built[compiler]
        if isinstance(found, BuildError):
            raise found
        return found
    t0 = time.perf_counter()
    try:
        kernel = Kernel(build(compiler))
    except BuildError as exc:
        _built[compiler] = exc
        raise
    _built[compiler] = kernel
    if log is not None:
        log(f"hand-written CPU kernels (DiffAugment, dihedral flips) built in {time.perf_counter() - t0:.1f} s "
            f"with {compiler}")
    return kernel
