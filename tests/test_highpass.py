"""Tests for satgan.highpass: the stencil form of D's high-pass input, its adjoint, and the compiled kernels."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from satgan.highpass import FusedHighPass, pack, pack_adjoint
from satgan.model import HighPass


def batch(c: int, h: int = 12, w: int = 10, n: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random (n, c, h, w) values in [-1, 1)."""
    return (torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1).to(dtype)


def eager(x: torch.Tensor, c: int) -> torch.Tensor:
    """HighPass's eager op (reflection pad, depthwise conv): the reference."""
    hp = HighPass(c)
    hp.fused.why_eager = "reference"
    return hp(x)


@given(h=st.integers(2, 9), w=st.integers(2, 9), packed=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_pack_equals_the_eager_conv(h, w, packed, seed):
    """The separable stencil with reflected borders gives the eager reflection-pad + depthwise conv, to float rounding."""
    x = batch(6 if packed else 3, h, w, seed=seed)
    torch.testing.assert_close(pack(x, 3), eager(x, 3), rtol=1e-6, atol=1e-6)


@given(h=st.integers(2, 9), w=st.integers(2, 9), packed=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=30, deadline=None)
def test_pack_adjoint_is_the_transpose_of_pack(h, w, packed, seed):
    """<pack(x), g> = <x, pack_adjoint(g)> for any x and g (float64): the adjoint is the op's exact gradient."""
    x = batch(6 if packed else 3, h, w, seed=seed, dtype=torch.float64)
    g = batch(6, h, w, seed=seed + 1, dtype=torch.float64)
    lhs = (pack(x, 3) * g).sum()
    rhs = (x * pack_adjoint(g, 3, packed)).sum()
    assert torch.isclose(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_pack_keeps_the_input_dtype():
    """A bf16 batch comes back bf16 (computed in float32 inside), within one bf16 rounding of the float32 result."""
    x = batch(6)
    out = pack(x.bfloat16(), 3)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), pack(x.bfloat16().float(), 3), rtol=1e-2, atol=1e-2)


def test_fused_highpass_compiled_equals_eager_with_gradients():
    """The compiled kernels give the eager op's output and input gradient (packed input, channels_last too)."""
    fused = FusedHighPass(3, min_elements=0)
    x = batch(6).contiguous(memory_format=torch.channels_last)
    if not fused.compiles(x):
        pytest.skip(f"no compile here: {fused.why_eager}")
    weights = batch(6, seed=5)
    results = []
    for fn in (fused, lambda t: eager(t, 3)):
        xg = x.clone().requires_grad_(True)
        y = fn(xg)
        (grad,) = torch.autograd.grad((y * weights).sum(), xg)
        results.append((y.detach(), grad))
    assert fused.why_eager is None
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-5)


def test_fused_highpass_second_derivative_equals_eager():
    """A gradient of a gradient (R1's double backward) runs through the compiled op and its adjoint, as eager's does."""
    fused = FusedHighPass(3, min_elements=0)
    x = batch(3)
    if not fused.compiles(x):
        pytest.skip(f"no compile here: {fused.why_eager}")
    results = []
    for fn in (fused, lambda t: eager(t, 3)):
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((fn(xg) ** 2).sum(), xg, create_graph=True)
        (grad2,) = torch.autograd.grad((grad ** 2).sum(), xg)
        results.append(grad2)
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-4)


def test_fused_highpass_without_a_compiler_stays_eager(monkeypatch):
    """No C++ compiler: compiles() is False whatever the size, and HighPass runs its eager op."""
    monkeypatch.setattr("satgan.highpass.cpp_compiler", lambda: None)
    hp = HighPass(3)
    hp.fused.min_elements = 0
    x = batch(3)
    assert not hp.fused.compiles(x) and "C++ compiler" in str(hp.fused.why_eager)
    assert torch.equal(hp(x), eager(x, 3))


def test_fused_highpass_stays_eager_below_its_size_threshold_and_on_one_pixel_rows():
    """Small batches (the tests' tiny ones) and images under 2 pixels a side run eagerly."""
    fused = FusedHighPass(3)
    assert not fused.compiles(batch(3))
    assert not FusedHighPass(3, min_elements=0).compiles(batch(3, h=1))
