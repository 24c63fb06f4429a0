"""Tests for satgan.train.hacks: each hack function does what it says; stateful hacks save and restore their state."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from satgan.augment import diff_augment
from satgan.model import LayerNoise, PixelNoise
from satgan.train import hacks as H
from satgan.train import train
from train_helpers import assert_same_weights, run_dirs, tiny_params, trainer, write_tiles


@given(lo=st.floats(0, 0.5), width=st.floats(0, 0.5), real=st.booleans())
@settings(max_examples=25, deadline=None)
def test_soft_labels_stay_in_their_range(lo, width, real):
    """Soft targets without flips lie inside the configured range."""
    t = H.label_targets(256, real, "cpu", (lo, lo + width), 0.0)
    assert t.min() >= lo - 1e-6 and t.max() <= lo + width + 1e-6


def test_hard_labels_without_soft_range():
    """soft_range=None gives exact 1s for real and 0s for fake (one-sided smoothing keeps fakes at 0)."""
    assert torch.equal(H.label_targets(8, True, "cpu", None, 0.0), torch.ones(8))
    assert torch.equal(H.label_targets(8, False, "cpu", None, 0.0), torch.zeros(8))


def test_noisy_labels_flip_the_configured_fraction():
    """flip_fraction=0.2 swaps about 20% of hard labels."""
    torch.manual_seed(0)
    t = H.label_targets(20000, True, "cpu", None, 0.2)
    assert abs((t == 0).float().mean().item() - 0.2) < 0.01


def test_instance_noise_decays_linearly_to_zero():
    """The noise std is std0 at step 0, half at decay/2, and 0 from decay_iters on."""
    std = lambda s: H.instance_noise_std(torch.tensor(s), 0.2, 100).item()  # noqa: E731
    assert std(0) == pytest.approx(0.2) and std(50) == pytest.approx(0.1) and std(100) == 0 and std(500) == 0


@given(step=st.integers(0, 10_000), std0=st.floats(0.001, 10.0), decay=st.integers(1, 5_000), active=st.booleans())
@settings(max_examples=50, deadline=None)
def test_g_layer_noise_std_decays_linearly_to_zero_in_every_layer(step, std0, decay, active):
    """set_layer_noise writes std0 * max(0, 1 - step/decay) (instance noise's schedule) and the active flag into each layer."""
    layers = [LayerNoise(), LayerNoise()]
    H.set_layer_noise(layers, H.instance_noise_std(torch.tensor(step), std0, decay), active)
    expected = std0 * max(0.0, 1.0 - step / decay)
    for m in layers:
        assert m.std.item() == pytest.approx(expected, rel=1e-5, abs=1e-6) and m.active is active
    assert "std" not in layers[0].state_dict()


def test_instance_noise_adds_noise_of_that_std():
    """add_instance_noise perturbs by ~std and leaves x unchanged at std 0."""
    x = torch.zeros(100, 3, 16, 16)
    assert abs(H.add_instance_noise(x, torch.tensor(0.5)).std().item() - 0.5) < 0.01
    assert torch.equal(H.add_instance_noise(x, torch.tensor(0.0)), x)


def test_dihedral_augment_gives_only_and_all_eight_symmetries():
    """Every augmented image is one of the 8 dihedral transforms, and all 8 occur."""
    torch.manual_seed(0)
    img = torch.arange(16.0).reshape(1, 1, 4, 4)
    group = [torch.rot90(t, k, (2, 3)) for t in (img, img.flip(3)) for k in range(4)]
    out = H.dihedral_augment(img.expand(200, 1, 4, 4).clone())
    seen = set()
    for o in out:
        matches = [i for i, g in enumerate(group) if torch.equal(o[None], g)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))


def test_replay_draw_returns_buffered_fakes():
    """draw() returns n past fakes from the buffer in the asked dtype."""
    buf = H.ReplayBuffer(torch.full((10, 1, 2, 2), 7.0))
    out = buf.draw(3, torch.float16)
    assert out.shape == (3, 1, 2, 2) and out.dtype == torch.float16 and (out == 7).all()


def test_replay_push_stores_fakes():
    """push() writes exactly the first n fresh fakes into the buffer."""
    buf = H.ReplayBuffer(torch.zeros(50, 1, 2, 2))
    buf.push(torch.ones(8, 1, 2, 2), 4)
    assert int((buf.images.flatten(1)[:, 0] == 1).sum()) == 4


@given(size=st.integers(1, 12), n=st.integers(1, 16), seed=st.integers(0, 2**31))
@settings(max_examples=60, deadline=None)
def test_replay_push_never_writes_two_rows_to_one_slot(size, n, seed):
    """Each pushed row lands in its own slot: min(n, size) slots change, each holding a different row."""
    torch.manual_seed(seed)
    buf = H.ReplayBuffer(torch.zeros(size, 1, 1, 1))
    rows = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1)  # row i holds the value i + 1
    buf.push(rows, n)
    written = buf.images.flatten()[buf.images.flatten() != 0]
    assert len(written) == min(n, size) and len(set(written.tolist())) == len(written)
    assert set(written.tolist()) <= set(range(1, min(n, size) + 1))


def test_replay_buffer_keeps_each_fakes_label_with_it():
    """A conditional buffer writes labels into the same slots as their fakes and draws them together."""
    torch.manual_seed(0)
    buf = H.ReplayBuffer(torch.zeros(12, 1, 1, 1), torch.full((12,), -1, dtype=torch.int64))
    fakes = torch.arange(1, 9, dtype=torch.float32).view(8, 1, 1, 1)  # fake i holds i + 1 ...
    buf.push(fakes, 6, torch.arange(1, 9) * 10)  # ... and label 10 (i + 1)
    written = buf.images.flatten() != 0
    assert int(written.sum()) == 6 and torch.equal(buf.labels[written], (buf.images.flatten()[written] * 10).long())
    images, labels = buf.draw_labelled(50, torch.float32)
    assert torch.equal(labels, torch.where(images.flatten() == 0, -1, (images.flatten() * 10).long()))
    with pytest.raises(ValueError, match="labels are needed exactly when"):
        buf.push(fakes, 2)
    with pytest.raises(ValueError, match="labels are needed exactly when"):
        H.ReplayBuffer(torch.zeros(4, 1, 1, 1)).push(fakes, 2, torch.zeros(8, dtype=torch.int64))


def test_conditional_replay_state_round_trips_and_refuses_a_state_without_labels():
    """The labels are part of a conditional buffer's state; an unconditional run's state (no labels) is refused."""
    a = H.ReplayBuffer(torch.randn(6, 1, 2, 2), torch.randint(0, 3, (6,)))
    b = H.ReplayBuffer(torch.zeros(6, 1, 2, 2), torch.zeros(6, dtype=torch.int64))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    with pytest.raises(ValueError, match="labels: missing"):
        b.load_state_dict({"images": torch.zeros(6, 1, 2, 2)})
    with pytest.raises(ValueError, match="this run is unconditional"):
        H.ReplayBuffer(torch.zeros(6, 1, 2, 2)).load_state_dict(a.state_dict())
    assert set(H.ReplayBuffer(torch.zeros(6, 1, 2, 2)).state_dict()) == {"images"}  # unconditional checkpoints unchanged


def test_feature_matching_is_zero_only_for_matching_means():
    """The loss is 0 when real and fake mean features agree, positive otherwise."""
    f = torch.randn(16, 5)
    assert H.feature_matching_loss(f, f.flip(0)).item() == pytest.approx(0, abs=1e-6)
    assert H.feature_matching_loss(f, f + 1).item() == pytest.approx(1.0, rel=1e-5)


def test_l2_penalty_sums_squares():
    """l2_penalty is the sum of squared weights."""
    assert H.l2_penalty([torch.ones(3), torch.full((2,), 2.0)]).item() == pytest.approx(11.0)


def test_historical_average_is_a_running_mean():
    """The average equals the mean of the parameter values seen, and the penalty measures the distance to it."""
    p = nn.Parameter(torch.zeros(2))
    ha = H.HistoricalAverage([p])
    for v in (1.0, 2.0, 3.0):
        with torch.no_grad():
            p.fill_(v)
        ha.update()
    assert torch.allclose(ha.average[0], torch.full((2,), 2.0))  # mean of 1, 2, 3
    assert ha.penalty().item() == pytest.approx(2.0)  # (3 - 2)^2 * 2


def test_ema_moves_towards_the_model_with_warmup():
    """ema_update lerps with min(decay, (1+t)/(10+t)) and copies BN buffers."""
    g = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for q in g.parameters():
            q.fill_(1.0)
        for q in ema.parameters():
            q.fill_(0.0)
        g[1].running_mean.fill_(5.0)
    H.ema_update(ema, g, 0.999, torch.tensor(0))
    assert torch.allclose(ema[0].weight, torch.full((2, 2), 0.9))  # decay 0.1 at t=0: 0.1*0 + 0.9*1
    assert torch.equal(ema[1].running_mean, g[1].running_mean)


def test_grad_norm_is_the_global_l2_norm():
    """grad_norm equals the norm of all gradients concatenated."""
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([4.0])
    assert H.grad_norm([a, b]).item() == pytest.approx(5.0)


def test_non_saturating_loss_is_minus_log_d():
    """non_saturating: -log sigmoid(l); minimax: log(1 - sigmoid(l))."""
    logits = torch.tensor([-2.0, 0.0, 3.0])
    ns = H.generator_adv_loss(logits, True)
    mm = H.generator_adv_loss(logits, False)
    assert ns.item() == pytest.approx((-torch.log(torch.sigmoid(logits))).mean().item(), rel=1e-5)
    assert mm.item() == pytest.approx(torch.log(1 - torch.sigmoid(logits)).mean().item(), rel=1e-5)


def test_moderated_flags_a_losing_discriminator():
    """More D steps when half the reals or half the fakes are misclassified, not otherwise."""
    good_real, good_fake = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, -2.0])
    assert not H.moderated_needs_more_d(good_real, good_fake)
    assert H.moderated_needs_more_d(torch.tensor([1.0, -1.0]), good_fake)
    assert H.moderated_needs_more_d(good_real, torch.tensor([-1.0, 0.5]))


def test_swap_schedule():
    """Checkpoint swap is active for `length` steps after every multiple of `every` (not at 0)."""
    active = [s for s in range(25) if H.swap_active(s, 10, 2)]
    assert active == [10, 11, 20, 21]


def test_failure_tracker_warns_on_stuck_d_and_big_gradients():
    """A D loss below the floor for `patience` points and a norm above the limit both warn."""
    ft = H.FailureTracker(0.05, 2, 100.0)
    assert ft.update(0.01, 1, 1)[1]["warn_d_loss_near_zero"] == 0
    msgs, warn = ft.update(0.01, 1, 150)
    assert warn == {"warn_d_loss_near_zero": 1.0, "warn_grad_norm": 1.0} and len(msgs) == 2
    assert ft.update(0.5, 1, 1)[1] == {"warn_d_loss_near_zero": 0.0, "warn_grad_norm": 0.0}


def test_weight_penalties_add_l2_then_history_and_return_the_l2_term():
    """add_weight_penalties adds l2_weight * sum(w^2) and history_weight * distance to the running mean; off adds 0."""
    p = nn.Parameter(torch.full((2,), 2.0))
    history = H.HistoricalAverage([p])
    with torch.no_grad():
        p.fill_(3.0)
    loss, l2 = H.add_weight_penalties(torch.tensor(1.0), [p], 0.5, history, 0.1)
    assert l2.item() == pytest.approx(0.5 * 18) and loss.item() == pytest.approx(1 + 9 + 0.1 * 2)
    off, l2_off = H.add_weight_penalties(torch.tensor(1.0), [p], None, None, 0.1)
    assert off.item() == 1.0 and l2_off.item() == 0.0


# ---------------------------------------------------------------- stateful hacks: state_dict round trips


def test_replay_buffer_state_round_trips_and_checks_shape():
    """A replay buffer restored from state_dict holds the same fakes; a wrongly shaped state is refused."""
    a = H.ReplayBuffer(torch.randn(6, 1, 2, 2))
    b = H.ReplayBuffer(torch.zeros(6, 1, 2, 2))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.images, b.images)
    with pytest.raises(ValueError, match="images: expected a tensor of shape"):
        b.load_state_dict({"images": torch.zeros(5, 1, 2, 2)})


def test_historical_average_state_round_trips():
    """A restored historical average has the same mean and count, so its penalty and next update agree."""
    p = nn.Parameter(torch.zeros(3))
    a = H.HistoricalAverage([p])
    for v in (1.0, 4.0):
        with torch.no_grad():
            p.fill_(v)
        a.update()
    b = H.HistoricalAverage([p])
    b.load_state_dict(a.state_dict())
    a.update()
    b.update()
    assert torch.equal(a.average[0], b.average[0]) and torch.equal(a.count, b.count)
    with pytest.raises(ValueError, match="average"):
        b.load_state_dict({"average": [], "count": torch.zeros(())})


def test_ema_state_round_trips():
    """The EMA copy restored from state_dict equals the saved one, buffers included."""
    g = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    a, b = H.Ema(g, 0.9), H.Ema(g, 0.9)
    with torch.no_grad():
        for q in g.parameters():
            q.add_(1.0)
    a.update(g, torch.tensor(5))
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.module.state_dict().values(), b.module.state_dict().values()))


def test_checkpoint_swap_refreshes_on_schedule_and_round_trips():
    """before_step refreshes the snapshots at multiples of `every` and flags `length` steps; state restores the snapshots."""
    g, d = nn.Linear(2, 2), nn.Linear(2, 1)
    swap = H.CheckpointSwap(g, d, every=3, length=1, device=torch.device("cpu"))
    with torch.no_grad():
        g.weight.fill_(7.0)
    flags = []
    for step in range(5):
        swap.before_step(step)
        flags.append(bool(swap.flag))
    assert flags == [False, False, False, True, False] and torch.equal(swap.g_old.weight, g.weight)
    other = H.CheckpointSwap(nn.Linear(2, 2), nn.Linear(2, 1), every=3, length=1, device=torch.device("cpu"))
    other.load_state_dict(swap.state_dict())
    assert torch.equal(other.g_old.weight, swap.g_old.weight) and torch.equal(other.d_old.bias, swap.d_old.bias)



def test_dihedral_augment_keeps_channels_last_and_matches_the_contiguous_result():
    """A channels_last batch comes back channels_last, equal to augmenting the same batch laid out NCHW."""
    x = torch.randn(16, 3, 8, 8)
    torch.manual_seed(3)
    plain = H.dihedral_augment(x)
    torch.manual_seed(3)
    nhwc = H.dihedral_augment(x.contiguous(memory_format=torch.channels_last))
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and torch.equal(plain, nhwc)


def _dihedral_both_ways(x: torch.Tensor, memory_format: torch.memory_format | None, seed: int) -> tuple[torch.Tensor, ...]:
    """dihedral_augment on the hand-written copy (any size) and on the gather, from the same seed."""
    out = []
    for kernel in (True, False):
        torch.manual_seed(seed)
        with mock.patch.object(H, "COMPILE_MIN_ELEMENTS", 0 if kernel else 2**62):
            out.append(H.dihedral_augment(x, memory_format))
    return tuple(out)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), c=st.sampled_from([1, 3, 4]), side=st.integers(1, 9),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]), channels_last=st.booleans(),
       memory_format=st.sampled_from([None, torch.channels_last, torch.contiguous_format]), seed=st.integers(0, 99))
def test_dihedral_copy_kernel_gives_the_gathers_bits_in_the_layout_asked(n, c, side, dtype, channels_last,
                                                                          memory_format, seed):
    """The CPU copy applies the same element per image as the gather, bit for bit, in the asked layout."""
    if H._dihedral_kernel(torch.zeros(2**17)) is None:
        pytest.skip("no hand-written kernel here (no C++ compiler)")
    x = torch.randn(n, c, side, side).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fast, gathered = _dihedral_both_ways(x, memory_format, seed)
    assert torch.equal(fast, gathered)
    want = memory_format or (torch.channels_last if H._channels_last(x) else torch.contiguous_format)
    assert fast.is_contiguous(memory_format=want) and gathered.is_contiguous(memory_format=want)


def test_dihedral_without_the_kernel_gathers_and_says_so_once(monkeypatch):
    """Where the kernel cannot be built the flips take the gather path, and the log says so once."""
    def refuse(compiler=None, log=None):
        raise H.augment_kernel.BuildError("no C++ compiler found (g++/c++/clang++ or $CXX)")

    lines: list[str] = []
    monkeypatch.setattr(H.augment_kernel, "load", refuse)
    monkeypatch.setattr(H, "say", lines.append)
    H._say_once.cache_clear()
    x = torch.randn(64, 3, 64, 64)
    for _ in range(2):
        assert H.dihedral_augment(x).shape == x.shape
    assert len(lines) == 1 and "gather" in lines[0] and "C++ compiler" in lines[0]
    H._say_once.cache_clear()


def test_instance_noise_keeps_the_layout_of_its_input():
    """add_instance_noise on a channels_last batch returns channels_last with noise of the asked std."""
    x = torch.zeros(64, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    out = H.add_instance_noise(x, torch.tensor(0.5))
    assert out.is_contiguous(memory_format=torch.channels_last) and abs(out.std().item() - 0.5) < 0.01


# ----------------------------------------------------------------- texture switches (issue 19)


def test_uncut_augmenter_packs_the_image_before_cutout_behind_the_same_augmentation():
    """uncut: (N, 2C, H, W), the first C exactly the plain augmentation (same draws), the last C it before cutout."""
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    policy = ("color", "translation", "cutout")
    torch.manual_seed(3)
    plain = H.Augmenter(policy, 1.0, None, 1)(x)
    torch.manual_seed(3)
    packed = H.Augmenter(policy, 1.0, None, 1, uncut=True)(x)
    torch.manual_seed(3)
    before = diff_augment(x, 1.0, policy[:2])
    assert packed.shape == (4, 6, 16, 16)
    assert torch.equal(packed[:, :3], plain) and torch.equal(packed[:, 3:], before)
    assert bool(((packed[:, :3] == 0) & (packed[:, 3:] != 0)).any())  # the cutout square is only in the first half


def test_uncut_augmenter_without_cutout_is_the_plain_one():
    """uncut with no cutout in the policy changes nothing: C channels, the plain augmentation."""
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.manual_seed(1)
    a = H.Augmenter(("color", "translation"), 1.0, None, 1, uncut=True)(x)
    torch.manual_seed(1)
    assert torch.equal(a, H.Augmenter(("color", "translation"), 1.0, None, 1)(x))


def test_uncut_augmenter_refuses_cutout_before_another_op():
    """uncut needs cutout last (params refuse it earlier, naming the key): no before-cutout image exists otherwise."""
    with pytest.raises(ValueError, match="cutout must be the policy's last op"):
        H.Augmenter(("cutout", "color"), 1.0, None, 1, uncut=True)


def test_highpass_d_reads_the_residual_of_the_uncut_image_in_training():
    """highpass_d with before_cutout: every D input is (B, 2C, H, W), the cutout square only in D's main channels."""
    tr = trainer(**{"highpass_d.enabled": True, "instance_noise.enabled": False, "replay.enabled": False})
    seen: list[torch.Tensor] = []
    tr.d[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    out = tr.run_step()
    assert all(torch.isfinite(v).all() for v in out.values())
    assert seen and all(x.shape[1] == 6 for x in seen)
    assert all(bool(((x[:, :3] == 0).all(1) & (x[:, 3:] != 0).any(1)).flatten(1).any(1).all()) for x in seen)
    assert tr.view is None or tr.view.real.shape[1] == 3


@pytest.mark.parametrize("hack", [{"bilinear_g.enabled": True}, {"g_pixel_noise.enabled": True},
                                  {"highpass_d.enabled": True}, {"highpass_d.enabled": True, "highpass_d.before_cutout": False}])
def test_resume_with_a_texture_switch_on_is_bit_identical(rsscn7_files, tmp_path, hack):
    """Each texture switch: 3 then 5 iterations (resumed) gives the weights of 5 in one go (pixel noise: seeded RNG)."""
    tiles = write_tiles(tmp_path / "prepared", rsscn7_files[::12][:12])
    dirs = {name: run_dirs(tmp_path, name) for name in ("a", "ref")}
    model, ck, _ = dirs["a"]
    train(tiny_params(hack, iterations=3), tiles, model, ck, None)
    assert train(tiny_params(hack, iterations=5), tiles, model, ck, None)["resumed"]
    ref, ref_ck, _ = dirs["ref"]
    train(tiny_params(hack, iterations=5), tiles, ref, ref_ck, None)
    assert_same_weights(model, ref)


def test_pixel_noise_scales_learn_from_zero():
    """G's pixel-noise scales start at 0 and get a gradient in G's step, so training can turn the noise up."""
    tr = trainer(**{"g_pixel_noise.enabled": True})
    scales = [m.weight for m in tr.g.modules() if isinstance(m, PixelNoise)]
    assert scales and all(float(s.detach().abs().sum()) == 0 for s in scales)
    tr.run_step()
    assert all(float(s.detach().abs().sum()) > 0 for s in scales)
