"""Tests for satgan.augment_kernel: the hand-written DiffAugment kernel against eager DiffAugment, and its build."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from satgan import augment_kernel
from satgan.augment import KERNEL_POLICY, FusedDiffAugment, _apply_policy, _draw_policy, _kernel_draws, diff_augment


@pytest.fixture(scope="module")
def kernel() -> augment_kernel.Kernel:
    try:
        return augment_kernel.load()
    except augment_kernel.BuildError as exc:
        pytest.skip(f"no kernel here: {exc}")


def batch(n: int, c: int, h: int, w: int, seed: int, dtype: torch.dtype = torch.float32,
          channels_last: bool = False) -> torch.Tensor:
    x = (torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def kernel_and_reference(x: torch.Tensor, seed: int, p: float = 1.0) -> tuple[torch.Tensor, ...]:
    """The kernel's output and input gradient (through FusedDiffAugment), and eager DiffAugment's on the same draws
    (drawn in x's dtype, as the kernel's are) computed in float64, for the same output gradient."""
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1)).to(x.dtype)
    fused = FusedDiffAugment(min_elements=0)
    xg = x.detach().clone().requires_grad_(True)
    y = fused(xg, p, generator=torch.Generator().manual_seed(seed))
    (grad,) = torch.autograd.grad((y * weights).sum(), xg)
    assert isinstance(fused.kernel, augment_kernel.Kernel)  # it ran the kernel, not inductor
    draws = _draw_policy(x, p, KERNEL_POLICY, torch.Generator().manual_seed(seed))
    x64 = x.detach().double().requires_grad_(True)
    ref = _apply_policy(x64, KERNEL_POLICY, draws)
    (gref,) = torch.autograd.grad((ref * weights.double()).sum(), x64)
    return y.detach().double(), grad.double(), ref.detach(), gref


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), c=st.sampled_from([1, 3, 4]), h=st.integers(2, 20), w=st.integers(2, 20),
       seed=st.integers(0, 2**16), channels_last=st.booleans(), p=st.sampled_from([0.0, 0.5, 1.0]))
def test_float32_equals_eager_diff_augment(kernel, n, c, h, w, seed, channels_last, p):
    """float32, either layout, any C, any p: eager DiffAugment's images and input gradients to float32 rounding."""
    y, g, ref, gref = kernel_and_reference(batch(n, c, h, w, seed, channels_last=channels_last), seed, p)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, gref, rtol=1e-5, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), channels_last=st.booleans())
def test_bfloat16_is_eager_in_float64_rounded_once(kernel, seed, channels_last):
    """bfloat16 in and out: the float64 result rounded once to bf16 (8 significant bits), up to float32 error near 0."""
    y, g, ref, gref = kernel_and_reference(batch(4, 3, 16, 24, seed, torch.bfloat16, channels_last), seed)
    torch.testing.assert_close(y, ref, rtol=2**-8, atol=1e-5)
    torch.testing.assert_close(g, gref, rtol=2**-8, atol=1e-5)


def test_output_keeps_a_channels_last_layout(kernel):
    """A channels_last batch comes back channels_last (the trainer's layout: no copy), an NCHW one NCHW."""
    fused = FusedDiffAugment(min_elements=0)
    for channels_last in (True, False):
        y = fused(batch(4, 3, 8, 8, 0, channels_last=channels_last), 1.0)
        assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_reruns_are_bit_identical(kernel):
    """The same seed gives the same output and gradient bits, in bfloat16 too."""
    runs = [kernel_and_reference(batch(8, 3, 16, 16, 2, torch.bfloat16, True), 5)[:2] for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_double_backward_equals_eager(kernel):
    """A gradient taken with create_graph (R1's penalty) is differentiable again and equals eager DiffAugment's."""
    x = batch(4, 3, 12, 12, 3)
    scale = torch.linspace(0, 1, 12)
    results = []
    for fn in (FusedDiffAugment(min_elements=0), diff_augment):
        xg = x.clone().requires_grad_(True)
        y = fn(xg, 1.0, generator=torch.Generator().manual_seed(8))
        (g,) = torch.autograd.grad((y ** 2 * scale).sum(), xg, create_graph=True)
        (gg,) = torch.autograd.grad((g ** 2).sum(), xg)
        results.append((g.detach(), gg))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-4)


def test_other_policies_and_uncut_stay_on_inductor():
    """Only the default policy without uncut runs on the kernel; any other stays on inductor's path."""
    assert FusedDiffAugment(KERNEL_POLICY).kernel is None  # built on first need
    assert FusedDiffAugment(("color", "translation")).kernel is False
    assert FusedDiffAugment(KERNEL_POLICY, uncut=True).kernel is False


def test_float16_and_float64_stay_on_inductor(kernel):
    """Dtypes the kernel does not read go to inductor's path (eager below its size threshold)."""
    fused = FusedDiffAugment(min_elements=2**30)  # eager: the dtype is refused before the size is looked at
    for dtype in (torch.float16, torch.float64):
        assert fused._kernel(batch(2, 3, 8, 8, 0, dtype)) is None


def test_a_failed_build_names_the_compiler_and_its_error(tmp_path):
    """A compiler that fails gives a BuildError with its last line, not a traceback from ctypes."""
    bad = tmp_path / "cc"
    bad.write_text("#!/bin/sh\necho 'cc: fatal error: no space left on device' >&2\nexit 1\n")
    bad.chmod(0o755)
    with pytest.raises(augment_kernel.BuildError, match="no space left on device"):
        augment_kernel.load(str(bad))


def test_openmp_is_asked_of_gcc_only(tmp_path):
    """-fopenmp goes to GCC (torch's own libgomp), not to a clang (its libomp would be a second thread pool)."""
    clang = tmp_path / "clang++"
    clang.write_text("#!/bin/sh\necho '#define __GNUC__ 4'\necho '#define __clang__ 1'\n")
    clang.chmod(0o755)
    assert augment_kernel.openmp_flags(str(clang)) == []
    gxx = shutil.which("g++")
    if gxx is not None and "__clang__" not in subprocess.run([gxx, "-dM", "-E", "-x", "c++", "/dev/null"],
                                                            capture_output=True, text=True).stdout:
        assert augment_kernel.openmp_flags(gxx) == ["-fopenmp"]


def test_a_compiler_without_openmp_builds_a_one_thread_kernel_with_the_same_bits(kernel, tmp_path):
    """A GCC that refuses -fopenmp still builds the kernel, without OpenMP, and its output has the same bits."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("no g++ here")
    wrapper = tmp_path / "gxx-no-openmp"
    wrapper.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && {{ echo "no OpenMP here" >&2; exit 1; }}; '
                       f'done\nexec {gxx} "$@"\n')
    wrapper.chmod(0o755)
    plain = augment_kernel.load(str(wrapper))
    x = batch(5, 3, 12, 12, 3, torch.bfloat16, True)
    draws = _kernel_draws(x, _draw_policy(x, 1.0, KERNEL_POLICY, torch.Generator().manual_seed(3)))
    assert torch.equal(plain.forward(x, draws), kernel.forward(x, draws))


def test_a_failed_build_falls_back_to_inductor_and_says_so(monkeypatch):
    """Where the kernel cannot be built, one log line says why and the call runs the inductor/eager path."""
    def refuse(compiler, log=None):
        raise augment_kernel.BuildError("g++ failed: boom")

    monkeypatch.setattr(augment_kernel, "load", refuse)
    lines: list[str] = []
    fused = FusedDiffAugment(log=lines.append, min_elements=0)
    x = batch(2, 3, 8, 8, 1)
    fused._kernel(x)
    assert fused.kernel is False and fused._kernel(x) is None
    assert len(lines) == 1 and "inductor" in lines[0] and "boom" in lines[0]


def test_the_build_is_logged_once_with_its_time(kernel, tmp_path):
    """The first load with a compiler builds and logs the seconds it took and the compiler; a second load reuses it."""
    compiler = tmp_path / "cxx"
    compiler.symlink_to(augment_kernel.cpp_compiler())  # a path of its own: not built in this process yet
    lines: list[str] = []
    for _ in range(2):
        augment_kernel.load(str(compiler), lines.append)
    assert len(lines) == 1 and re.search(r"built in \d+\.\d s with .*cxx", lines[0])


def test_fused_diff_augment_says_once_that_it_runs_the_kernel(kernel):
    """The first call that needs the kernel logs it once, naming the compiler."""
    lines: list[str] = []
    fused = FusedDiffAugment(log=lines.append, min_elements=0)
    for _ in range(2):
        fused(batch(2, 3, 8, 8, 0), 1.0)
    assert len(lines) == 1 and "hand-written CPU kernel" in lines[0] and fused.compiler in lines[0]


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 9), threads=st.integers(2, 5), seed=st.integers(0, 2**16), channels_last=st.booleans())
def test_the_bits_do_not_depend_on_the_thread_count(kernel, n, threads, seed, channels_last):
    """The kernel splits images between torch's threads; any count gives 1 thread's output and gradient bits."""
    before = torch.get_num_threads()
    runs = []
    try:
        for count in (1, threads):
            torch.set_num_threads(count)
            runs.append(kernel_and_reference(batch(n, 3, 12, 12, seed, torch.bfloat16, channels_last), seed)[:2])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 9), threads=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_the_flips_do_not_depend_on_the_thread_count(kernel, n, threads, seed):
    """The dihedral copy, split between threads, gives 1 thread's bits."""
    x = batch(n, 3, 8, 8, seed, torch.bfloat16, True)
    maps = torch.tensor([[7, 8, -1]] * n, dtype=torch.int32)  # every image flipped left-right
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernel.dihedral(x, maps, True)
        torch.set_num_threads(threads)
        many = kernel.dihedral(x, maps, True)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, many) and torch.equal(one, x.flip(-1))


def test_the_kernel_runs_on_torchs_own_openmp_runtime(kernel):
    """The built library brings no OpenMP runtime of its own: in a fresh process that loads torch and the kernel, the
    only OpenMP runtime mapped is the one torch loaded (other packages here, simsimd's wheel, bring theirs)."""
    code = ("import torch\nfrom satgan import augment_kernel\naugment_kernel.load()\n"
            "print('\\n'.join(sorted({l.split()[-1] for l in open('/proc/self/maps') if 'gomp' in l or 'libomp' in l})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mapped = done.stdout.split()
    assert len(mapped) == 1 and mapped[0].startswith(str(Path(torch.__file__).parent)), mapped
