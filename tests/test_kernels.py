"""Tests for satgan.kernels: the stencil form of D's high-pass input, its adjoint, and the compiled kernels."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from satgan.kernels import FusedOp, pack, pack_adjoint
from satgan.model import HighPass


def batch(c: int, h: int = 12, w: int = 10, n: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random (n, c, h, w) values in [-1, 1)."""
    return (torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1).to(dtype)


def eager_highpass(x: torch.Tensor, c: int) -> torch.Tensor:
    """HighPass's eager op (reflection pad, depthwise conv): the reference."""
    hp = HighPass(c)
    hp.fused.why_eager = "reference"
    return hp(x)


def compiled_and_eager(fused: FusedOp, eager, x: torch.Tensor, out_channels: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(output, input gradient of a weighted sum) of the compiled op and of the eager one, from the same input."""
    results = []
    for fn in (fused, eager):
        xg = x.clone().requires_grad_(True)
        y = fn(xg)
        weights = batch(out_channels, *y.shape[2:], n=y.shape[0], seed=5)
        (grad,) = torch.autograd.grad((y * weights).sum(), xg)
        results.append((y.detach(), grad))
    return results


@given(h=st.integers(2, 9), w=st.integers(2, 9), packed=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_pack_equals_the_eager_conv(h, w, packed, seed):
    """The separable stencil with reflected borders gives the eager reflection-pad + depthwise conv, to float rounding."""
    x = batch(6 if packed else 3, h, w, seed=seed)
    torch.testing.assert_close(pack(x, 3), eager_highpass(x, 3), rtol=1e-6, atol=1e-6)


@given(h=st.integers(2, 9), w=st.integers(2, 9), packed=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_pack_adjoint_is_the_transpose_of_pack(h, w, packed, seed):
    """<pack(x), g> = <x, pack_adjoint(g)> for any x and g (float64): the adjoint is the op's exact gradient."""
    c_in = 6 if packed else 3
    x = batch(c_in, h, w, seed=seed, dtype=torch.float64)
    g = batch(6, h, w, seed=seed + 1, dtype=torch.float64)
    assert torch.isclose((pack(x, 3) * g).sum(), (x * pack_adjoint(g, c_in, 3)).sum(), rtol=1e-12, atol=1e-12)


def test_pack_keeps_the_input_dtype():
    """A bf16 batch comes back bf16 (computed in float32 inside), within one bf16 rounding of the float32 result."""
    x = batch(6)
    out = pack(x.bfloat16(), 3)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), pack(x.bfloat16().float(), 3), rtol=1e-2, atol=1e-2)


def test_fused_highpass_compiled_equals_eager_with_gradients():
    """The compiled high-pass kernels give the eager op's output and input gradient (packed channels_last input)."""
    fused = FusedOp(pack, pack_adjoint, "D high-pass", 3, min_elements=0)
    x = batch(6).contiguous(memory_format=torch.channels_last)
    if not fused.compiles(x):
        pytest.skip(f"no compile here: {fused.why_eager}")
    (y, gy), (ref, gref) = compiled_and_eager(fused, lambda t: eager_highpass(t, 3), x, 6)
    assert fused.why_eager is None
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gy, gref, rtol=1e-5, atol=1e-5)


def test_fused_highpass_second_derivative_equals_eager():
    """A gradient of a gradient (R1's double backward) runs through the compiled op and its adjoint, as eager's does."""
    fused = FusedOp(pack, pack_adjoint, "D high-pass", 3, min_elements=0)
    x = batch(3)
    if not fused.compiles(x):
        pytest.skip(f"no compile here: {fused.why_eager}")
    results = []
    for fn in (fused, lambda t: eager_highpass(t, 3)):
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((fn(xg) ** 2).sum(), xg, create_graph=True)
        (grad2,) = torch.autograd.grad((grad ** 2).sum(), xg)
        results.append(grad2)
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-4)


def test_without_a_compiler_the_modules_stay_eager(monkeypatch):
    """No C++ compiler: compiles() is False whatever the size, and HighPass runs its eager op."""
    monkeypatch.setattr("satgan.kernels.cpp_compiler", lambda: None)
    hp = HighPass(3)
    hp.fused.min_elements = 0
    x = batch(3)
    assert not hp.fused.compiles(x) and "C++ compiler" in str(hp.fused.why_eager)
    assert torch.equal(hp(x), eager_highpass(x, 3))


def test_kernels_stay_eager_below_the_size_threshold_and_on_one_pixel_rows():
    """Small batches (the tests' tiny ones) and images under 2 pixels a side run eagerly."""
    assert not FusedOp(pack, pack_adjoint, "D high-pass", 3).compiles(batch(3))
    assert not FusedOp(pack, pack_adjoint, "D high-pass", 3, min_elements=0).compiles(batch(3, h=1))




def test_a_failed_compile_falls_back_to_eager_and_says_so_once(monkeypatch):
    """An inductor error: one log line naming it, the eager op's result, and eager from then on (no second try)."""
    import satgan.kernels as K

    def broken(*args, **kwargs):
        raise RuntimeError("inductor exploded\nsecond line")

    monkeypatch.setattr(K, "_compiled", {})
    monkeypatch.setattr(K.torch, "compile", lambda fn, **kw: broken)
    lines: list[str] = []
    fused = FusedOp(pack, pack_adjoint, "D high-pass", 3, min_elements=0, log=lines.append)
    fused.why_eager = None  # as where a compiler is found
    x = batch(3)
    out, again = fused(x), fused(x)
    torch.testing.assert_close(out, eager_highpass(x, 3), rtol=1e-6, atol=1e-6)
    assert torch.equal(out, again) and len(lines) == 1
    assert "D high-pass: eager from now on" in lines[0] and "RuntimeError: inductor exploded" in lines[0]
