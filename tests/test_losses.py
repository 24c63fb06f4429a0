"""Tests for satgan.losses: hinge and BCE losses on known logits, and R1 against a hand-computed gradient."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from satgan.losses import d_bce, d_hinge, g_hinge, g_non_saturating, g_saturating, hinge, r1_from_logits, r1_penalty


def test_hinge_losses_on_known_logits():
    """d_hinge = mean(relu(1 - real)) + mean(relu(1 + fake)); g_hinge = -mean(fake)."""
    real = torch.tensor([2.0, 0.5, -1.0])   # hinge terms 0, 0.5, 2   -> mean 2.5 / 3
    fake = torch.tensor([-3.0, 0.0, 1.0])   # hinge terms 0, 1, 2     -> mean 1
    assert d_hinge(real, fake).item() == pytest.approx(2.5 / 3 + 1.0)
    assert g_hinge(fake).item() == pytest.approx(-(-3.0 + 0.0 + 1.0) / 3)


def test_hinge_is_zero_once_d_is_confident_beyond_the_margin():
    """Reals scored >= 1 and fakes <= -1 cost D nothing: the hinge stops pushing past the margin."""
    assert d_hinge(torch.tensor([1.0, 5.0]), torch.tensor([-1.0, -7.0])).item() == 0.0


def test_bce_losses_on_known_logits():
    """At logit 0 every BCE term is ln 2; the non-saturating G loss is softplus(-z), the saturating one -softplus(z)."""
    z = torch.zeros(4)
    assert d_bce(z, z).item() == pytest.approx(2 * math.log(2))
    assert g_non_saturating(torch.tensor([1.0])).item() == pytest.approx(math.log1p(math.exp(-1.0)))
    assert g_saturating(torch.tensor([1.0])).item() == pytest.approx(-math.log1p(math.exp(1.0)))


def test_bce_soft_targets():
    """A real target of 0.9 on logit z costs -(0.9 log s + 0.1 log(1 - s)) with s = sigmoid(z)."""
    s = 1 / (1 + math.exp(-2.0))
    expected = -(0.9 * math.log(s) + 0.1 * math.log(1 - s)) + math.log1p(math.exp(-5.0))  # fake at -5, target 0
    assert d_bce(torch.tensor([2.0]), torch.tensor([-5.0]), real_target=0.9).item() == pytest.approx(expected)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=1, max_size=16))
def test_non_saturating_gradient_is_strong_where_saturating_vanishes(logits):
    """For fakes D rejects (logit < 0), the non-saturating G gradient is at least the saturating one, in size."""
    z1 = torch.tensor(logits, requires_grad=True)
    z2 = torch.tensor(logits, requires_grad=True)
    g_non_saturating(z1).backward()
    g_saturating(z2).backward()
    rejected = z1.detach() < 0
    assert torch.all(z1.grad[rejected].abs() >= z2.grad[rejected].abs() - 1e-7)


def test_r1_equals_the_gradient_norm_of_a_linear_d():
    """For D(x) = w . x + b the input gradient is w for every image: R1 = gamma / 2 * ||w||^2, and d R1 / d w = gamma * w."""
    torch.manual_seed(0)
    d = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 3, 1))
    real = torch.randn(5, 2, 3, 3)
    gamma = 10.0
    penalty = r1_penalty(d, real, gamma)
    w = d[1].weight
    assert penalty.item() == pytest.approx(0.5 * gamma * w.pow(2).sum().item(), rel=1e-6)
    penalty.backward()
    assert torch.allclose(w.grad, gamma * w.detach(), rtol=1e-5)


def test_r1_of_a_quadratic_d_matches_autograd_free_math():
    """For D(x) = sum(x^2) the gradient is 2x: R1 = gamma / 2 * mean over images of ||2x||^2."""
    real = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    penalty = r1_penalty(lambda x: x.pow(2).flatten(1).sum(1), real, gamma=1.0)
    expected = 0.5 * (2 * real).pow(2).flatten(1).sum(1).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6) and not real.requires_grad


def test_hinge_with_per_sample_signs_flips_a_label():
    """hinge(logits, sign) with sign -1 on a real scores it as a fake: relu(1 + D) for that sample."""
    logits = torch.tensor([2.0, 0.5])
    assert hinge(logits, torch.tensor([1.0, -1.0])).item() == pytest.approx((0.0 + 1.5) / 2)
    assert hinge(logits, 1.0).item() == pytest.approx((0.0 + 0.5) / 2)


def test_r1_from_a_forward_already_run_equals_r1_penalty():
    """r1_from_logits on D(f(x)) with x requiring grad equals r1_penalty(D o f, x): no second forward needed."""
    torch.manual_seed(0)
    d = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 2, 1))
    real = torch.randn(4, 2, 4, 4)
    x = real.detach().requires_grad_(True)
    from_forward = r1_from_logits(d(x * 0.5 + 0.1), x, 3.0)
    assert from_forward.item() == pytest.approx(r1_penalty(lambda y: d(y * 0.5 + 0.1), real, 3.0).item(), rel=1e-6)


def test_class_cross_entropy_equals_torch_cross_entropy():
    """The AC-GAN class loss built from a one-hot mask is F.cross_entropy's value; class_accuracy is the argmax hit rate."""
    import torch.nn.functional as F

    from satgan.losses import class_accuracy, class_cross_entropy

    torch.manual_seed(0)
    logits, labels = torch.randn(9, 4), torch.randint(0, 4, (9,))
    assert class_cross_entropy(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert class_cross_entropy(logits.bfloat16(), labels).dtype == torch.float32
    logits.requires_grad_(True)
    class_cross_entropy(logits, labels).backward()
    assert torch.allclose(logits.grad, (torch.softmax(logits, 1) - F.one_hot(labels, 4)).detach() / 9, atol=1e-6)
    hits = class_accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]]), torch.tensor([0, 1, 1]))
    assert hits.item() == pytest.approx(2 / 3)
