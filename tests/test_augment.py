"""Tests for satgan.augment: DiffAugment ops (gradients, identity at p=0, range, determinism) and the ADA controller."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from satgan.augment import (
    COMPILE_MIN_ELEMENTS,
    AdaController,
    FusedDiffAugment,
    brightness,
    contrast,
    cutout,
    diff_augment,
    saturation,
    translation,
)

OPS = [brightness, saturation, contrast, translation, cutout]


def images(n: int = 8, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    """Random (n, c, h, w) images in [-1, 1], with no zero pixel (so a zeroed pixel is detectable)."""
    x = torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return torch.where(x == 0, torch.full_like(x, 0.5), x)


@pytest.mark.parametrize("op", OPS, ids=lambda f: f.__name__)
def test_gradients_reach_the_input(op):
    """Every op is differentiable: a weighted sum of its output has a finite, non-zero gradient at the input."""
    x = images().requires_grad_(True)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    (op(x, 1.0, generator=torch.Generator().manual_seed(2)) * weights).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("op", [*OPS, diff_augment], ids=lambda f: f.__name__)
def test_p_zero_is_the_identity(op):
    """With probability 0 (a float or a tensor) every op returns its input unchanged."""
    x = images()
    assert torch.equal(op(x, 0.0), x) and torch.equal(op(x, torch.tensor(0.0)), x)


@pytest.mark.parametrize("op", [*OPS, diff_augment], ids=lambda f: f.__name__)
def test_the_same_seed_gives_the_same_output(op):
    """Seeded generators make every op reproducible, and another seed draws another augmentation."""
    x = images()
    a, b, c = (op(x, 1.0, generator=torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(4, 24), st.integers(4, 24), st.integers(0, 2**31))
def test_translation_is_a_zero_filled_shift_within_an_eighth(n, h, w, seed):
    """Each image comes out as itself shifted by whole pixels (at most 1/8 of each side), zeros filling the gap."""
    x = images(n, 2, h, w, seed)
    out = translation(x, 1.0, generator=torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    sh, sw = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
    for k in range(n):
        matches = []
        for dy in range(-sh, sh + 1):
            for dx in range(-sw, sw + 1):
                ref = torch.zeros_like(x[k])
                ys, xs = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
                ref[:, ys, xs] = x[k][:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
                matches.append(torch.equal(out[k], ref))
        assert any(matches)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(4, 24), st.integers(4, 24), st.integers(0, 2**31))
def test_cutout_zeroes_one_square_of_half_the_side(n, h, w, seed):
    """Each image keeps its pixels except one (border-clipped) rectangle of at most (h/2) x (w/2), set to 0."""
    x = images(n, 2, h, w, seed)
    out = cutout(x, 1.0, generator=torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    for k in range(n):
        changed = (out[k] != x[k]).any(0)
        assert torch.equal(changed, (out[k] == 0).all(0))  # every change is a zeroed pixel, across all channels
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        if len(rows):
            box = changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert box.all() and box.shape[0] <= ch and box.shape[1] <= cw


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(2, 20), st.integers(2, 20), st.integers(0, 2**31))
def test_translation_gradient_is_its_exact_transpose(n, h, w, seed):
    """translation is linear: its input gradient g' satisfies <T x, g> = <x, g'> for any x and g (float64)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.randn(n, 2, h, w, generator=gen, dtype=torch.float64)
    y = translation(x, 1.0, generator=torch.Generator().manual_seed(seed))
    (grad,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close((y * g).sum(), (x * grad).sum(), rtol=1e-12, atol=1e-12)


def test_translation_has_a_second_derivative():
    """translation's gradient is differentiable again (R1 through DiffAugment): gradgradcheck in float64."""
    x = torch.randn(3, 2, 9, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: translation(t, 1.0, generator=torch.Generator().manual_seed(1)) ** 2, (x,))


def test_p_is_the_per_image_probability():
    """With p = 0.3, brightness changes about 30% of 4000 images (binomial 6-sigma bounds)."""
    x = torch.zeros(4000, 1, 2, 2)
    changed = (brightness(x, 0.3, generator=torch.Generator().manual_seed(0)) != 0).flatten(1).any(1).float().mean()
    assert abs(changed.item() - 0.3) < 6 * (0.3 * 0.7 / 4000) ** 0.5


def test_colour_ops_change_what_they_say():
    """Brightness moves the mean, saturation keeps the per-pixel channel mean, contrast keeps the image mean."""
    x = images(4)
    g = torch.Generator().manual_seed(5)
    assert not torch.allclose(brightness(x, 1.0, generator=g).mean((1, 2, 3)), x.mean((1, 2, 3)))
    assert torch.allclose(saturation(x, 1.0, generator=g).mean(1), x.mean(1), atol=1e-6)
    assert torch.allclose(contrast(x, 1.0, generator=g).mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-6)


def test_unknown_policy_is_refused():
    """A misspelt policy name is an error that lists the known ones."""
    with pytest.raises(ValueError, match="cutout"):
        diff_augment(images(), 1.0, policy=("colour",))


def test_ada_raises_p_while_d_is_sure_of_the_reals_and_lowers_it_after():
    """All-positive real logits (r_t = 1 > 0.6) raise p by images / (speed_kimg * 1000); all-negative lower it, clamped at 0."""
    ada = AdaController(target=0.6, speed_kimg=1.0, device="cpu")
    p_tensor = ada.p
    for _ in range(4):
        ada.observe(torch.full((64,), 3.0))
    ada.update()
    assert ada.p.item() == pytest.approx(256 / 1000) and ada.r_t.item() == 1.0 and ada.p is p_tensor
    ada.observe(-torch.ones(1000))
    ada.update()
    assert ada.p.item() == 0.0 and ada.r_t.item() == -1.0


def test_ada_update_without_observations_keeps_p():
    """An update with no real batch observed since the last one changes nothing."""
    ada = AdaController(p_init=0.4)
    ada.update()
    assert ada.p.item() == pytest.approx(0.4)


def test_ada_state_round_trips_in_place():
    """load_state_dict restores p, r_t and the pending counts into the same tensors (a captured graph keeps working)."""
    a = AdaController(target=0.5, speed_kimg=2.0)
    a.observe(torch.tensor([1.0, 1.0, -1.0]))
    a.update()
    a.observe(torch.tensor([2.0]))
    b = AdaController(target=0.5, speed_kimg=2.0)
    p_before = b.p
    b.load_state_dict({k: v.clone() for k, v in a.state_dict().items()})
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict()) and b.p is p_before
    a.update()
    b.update()
    assert a.p.item() == b.p.item() and a.p.item() > 0


def test_ada_state_of_the_wrong_shape_is_refused():
    """A checkpoint entry that is not a 0-d tensor is a ValueError naming the entry."""
    ada = AdaController()
    with pytest.raises(ValueError, match="p: expected a 0-d tensor, got \\[3\\]"):
        ada.load_state_dict({**ada.state_dict(), "p": torch.zeros(3)})


def test_ada_update_waits_for_its_device_flag():
    """update(when=False) keeps p and keeps accumulating; update(when=True) then uses every image seen since."""
    ada = AdaController(target=0.0, speed_kimg=1.0)
    ada.observe(torch.ones(100))
    ada.update(when=torch.tensor(False))
    assert ada.p.item() == 0.0 and ada._count.item() == 100
    ada.observe(torch.ones(100))
    ada.update(when=torch.tensor(True))
    assert ada.p.item() == pytest.approx(200 / 1000) and ada._count.item() == 0


def test_ada_p_drives_diff_augment():
    """The controller's p tensor is accepted by diff_augment as the probability."""
    ada = AdaController(p_init=0.0)
    x = images()
    assert torch.equal(diff_augment(x, ada.p), x)
    ada.load_state_dict({**ada.state_dict(), "p": torch.tensor(1.0)})
    assert not torch.equal(diff_augment(x, ada.p, generator=torch.Generator().manual_seed(0)), x)


def test_ada_all_reduce_sums_the_pending_counts_of_every_process():
    """all_reduce_ hands [sign_sum, count] to the reducer and keeps its result: two processes' reals count as one."""
    ada = AdaController(target=0.0, speed_kimg=1.0)
    ada.observe(torch.ones(10))  # this process: r_t = 1 over 10 reals; the other sent 30 reals with sign sum -30
    ada.all_reduce_(lambda t: t.add_(torch.tensor([-30.0, 30.0])))
    ada.update()
    assert ada.r_t.item() == pytest.approx(-0.5) and ada.p.item() == 0.0


def _fused_and_eager(fused: FusedDiffAugment, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    """Outputs and input gradients of ``fused`` and of eager diff_augment on the same draws."""
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(99))
    out = []
    for fn in (fused, diff_augment):
        xg = x.clone().requires_grad_(True)
        y = fn(xg, 1.0, generator=torch.Generator().manual_seed(seed))
        (grad,) = torch.autograd.grad((y * weights).sum(), xg)
        out += [y.detach(), grad]
    return tuple(out)


def test_fused_diff_augment_equals_eager_within_float_rounding():
    """The inductor-compiled applies give eager DiffAugment's images and gradients, to float rounding, for one seed."""
    fused = FusedDiffAugment(min_elements=0)
    if not fused.compiles(images()):
        pytest.skip(f"no compile here: {fused.why_eager}")
    y, gy, ref, gref = _fused_and_eager(fused, images(), seed=7)
    assert fused.compiles(images()) and fused.why_eager is None  # it did compile, not fall back
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gy, gref, rtol=1e-5, atol=1e-5)


def test_fused_diff_augment_reruns_are_bit_identical():
    """Two compiled instances on the same seed give the same bits (fixed kernels, the eager random stream)."""
    a, b = FusedDiffAugment(min_elements=0), FusedDiffAugment(min_elements=0)
    if not a.compiles(images()):
        pytest.skip(f"no compile here: {a.why_eager}")
    first, second = _fused_and_eager(a, images(), seed=3), _fused_and_eager(b, images(), seed=3)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_fused_diff_augment_without_a_compiler_is_eager_and_says_so(monkeypatch):
    """No C++ compiler: one log line says so, and the output is eager diff_augment's, bit for bit."""
    monkeypatch.setattr("satgan.augment.cpp_compiler", lambda: None)
    lines: list[str] = []
    fused = FusedDiffAugment(log=lines.append, min_elements=0)
    x = images()
    out = fused(x, 1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out, diff_augment(x, 1.0, generator=torch.Generator().manual_seed(5)))
    assert len(lines) == 1 and "eager" in lines[0] and "C++ compiler" in lines[0]


def test_fused_diff_augment_stays_eager_below_its_size_threshold():
    """Batches under min_elements (the tests' tiny ones) run eagerly: no compile, eager's exact output."""
    fused = FusedDiffAugment(min_elements=COMPILE_MIN_ELEMENTS)
    x = images()
    assert x.numel() < COMPILE_MIN_ELEMENTS and not fused.compiles(x)
    assert torch.equal(fused(x, 1.0, generator=torch.Generator().manual_seed(2)),
                       diff_augment(x, 1.0, generator=torch.Generator().manual_seed(2)))


def _uncut_reference(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Eager uncut DiffAugment from the public ops: cutout of the colour + translation result, and that result behind it."""
    gen = torch.Generator().manual_seed(seed)
    before = diff_augment(x, 1.0, ("color", "translation"), generator=gen)
    return torch.cat([cutout(before, 1.0, generator=gen), before], dim=1)


def test_fused_diff_augment_uncut_eager_packs_the_image_before_cutout():
    """uncut, eager (below the size threshold): [cutout result, image before cutout], from one call's draws, bit-exact."""
    fused = FusedDiffAugment(uncut=True)
    x = images()
    out = fused(x, 1.0, generator=torch.Generator().manual_seed(4))
    assert out.shape == (8, 6, 16, 16) and not fused.compiles(x)
    assert torch.equal(out, _uncut_reference(x, seed=4))


def test_fused_diff_augment_uncut_compiled_equals_eager_within_float_rounding():
    """uncut, compiled: eager's packed images and input gradients, to float rounding, from a channels_last input too."""
    fused = FusedDiffAugment(min_elements=0, uncut=True)
    x = images().contiguous(memory_format=torch.channels_last)
    if not fused.compiles(x):
        pytest.skip(f"no compile here: {fused.why_eager}")
    weights = torch.randn(8, 6, 16, 16, generator=torch.Generator().manual_seed(9))
    results = []
    for fn in (lambda t: fused(t, 1.0, generator=torch.Generator().manual_seed(6)), lambda t: _uncut_reference(t, 6)):
        xg = x.clone().requires_grad_(True)
        y = fn(xg)
        (grad,) = torch.autograd.grad((y * weights).sum(), xg)
        results.append((y.detach(), grad))
    assert fused.why_eager is None
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-5)


def test_fused_diff_augment_uncut_needs_cutout_last():
    """uncut without cutout as the last op is refused when built: there is no image before cutout to pack."""
    with pytest.raises(ValueError, match="cutout must be the policy's last op"):
        FusedDiffAugment(("cutout", "color"), uncut=True)


def test_fused_diff_augment_refuses_an_unknown_policy():
    """An unknown policy name is refused when the augmenter is built, as diff_augment refuses it."""
    with pytest.raises(ValueError, match="policies"):
        FusedDiffAugment(("color", "rotate"))
