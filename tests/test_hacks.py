"""Tests for satgan.hacks: each GAN hack does what its switch says, alone and in combination."""

from __future__ import annotations


import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from satgan import hacks as H
from satgan.params import from_mapping
from satgan.train import Dist, Trainer, model_config
from satgan.trainparams import TrainParams

from test_train import tiny_params_dict

ARRAY = np.random.default_rng(0).uniform(-1, 1, (20, 3, 32, 32)).astype(np.float32)


def _trainer(**hack_overrides) -> Trainer:
    doc = tiny_params_dict()
    for key, value in hack_overrides.items():
        node = doc["hacks"]
        *parents, leaf = key.split(".")
        for k in parents:
            node = node[k]
        node[leaf] = value
    p = from_mapping(TrainParams, doc, "train")
    return Trainer(p, model_config(p, 32, 3), ARRAY, torch.device("cpu"), Dist())


def _adam_steps(opt: torch.optim.Optimizer) -> int:
    return int(next(iter(opt.state.values()))["step"])


# ---------------------------------------------------------------- pure hacks


def test_gaussian_latent_is_standard_normal():
    """gaussian_latent draws N(0, 1): mean ~0, std ~1, values beyond +-1."""
    z = H.sample_latent(4000, 8, True, "cpu")
    assert z.shape == (4000, 8, 1, 1) and abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05 and z.abs().max() > 2


def test_uniform_latent_is_bounded():
    """gaussian_latent=false draws U(-1, 1)."""
    z = H.sample_latent(4000, 8, False, "cpu")
    assert z.min() >= -1 and z.max() <= 1 and abs(z.std() - 1 / 3**0.5) < 0.02


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
    """push() writes n fresh fakes into the buffer."""
    buf = H.ReplayBuffer(torch.zeros(50, 1, 2, 2))
    buf.push(torch.ones(8, 1, 2, 2), 4)
    assert 1 <= int((buf.images.flatten(1)[:, 0] == 1).sum()) <= 4


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


# ---------------------------------------------------------------- hacks inside the trainer


def test_separate_batches_runs_d_on_all_real_then_all_fake():
    """separate_batches=true: D sees two batches of B; false: one batch of 2B."""
    for separate, expected in ((True, [4, 4]), (False, [8])):
        tr = _trainer(separate_batches=separate, **{"replay.enabled": False})
        sizes: list[int] = []
        handle = tr.d.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
        tr._d_update(tr._real(0), tr.g(tr._z()).detach(), torch.zeros(()))
        handle.remove()
        assert sizes == expected


def test_replayed_fakes_get_their_own_d_batch():
    """With replay, D scores B fresh fakes as one batch and the past fakes as another (BN never mixes them)."""
    tr = _trainer(**{"replay.enabled": True, "replay.fraction": 0.5})
    sizes: list[int] = []
    handle = tr.d.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    tr._d_update(tr._real(0), tr.g(tr._z()).detach(), torch.zeros(()))
    handle.remove()
    assert sizes == [4, 4, 2]


def test_extra_steps_update_d_and_g_that_many_times():
    """extra_steps d_steps=3, g_steps=2 gives 3 D and 2 G optimizer steps per iteration."""
    tr = _trainer(**{"extra_steps.enabled": True, "extra_steps.d_steps": 3, "extra_steps.g_steps": 2})
    tr.run_step()
    assert (_adam_steps(tr.opt_d), _adam_steps(tr.opt_g)) == (3, 2)


def test_moderated_takes_between_zero_and_max_extra_d_steps():
    """moderated adds 0..max extra D steps and never extra G steps."""
    tr = _trainer(**{"moderated.enabled": True, "moderated.max_extra_d_steps": 2})
    for _ in range(3):
        tr.run_step()
    assert 3 <= _adam_steps(tr.opt_d) <= 9 and _adam_steps(tr.opt_g) == 3


def test_sgd_discriminator_swaps_d_optimizer():
    """sgd_discriminator uses SGD for D and keeps Adam for G."""
    tr = _trainer(**{"sgd_discriminator.enabled": True})
    assert isinstance(tr.opt_d, torch.optim.SGD) and isinstance(tr.opt_g, torch.optim.Adam)


def test_l2_penalty_is_logged_separately():
    """l2_penalty on: loss_d = loss_d_adv + loss_d_l2 with loss_d_l2 > 0; off: 0."""
    on = _trainer(**{"l2_penalty.enabled": True, "l2_penalty.d": 0.1}).run_step()
    off = _trainer().run_step()
    assert on["loss_d_l2"] > 0 and torch.allclose(on["loss_d"], on["loss_d_adv"] + on["loss_d_l2"])
    assert on["loss_g_l2"] > 0 and off["loss_d_l2"] == 0


def test_feature_matching_adds_its_loss():
    """feature_matching on: a positive loss_g_fm enters G's loss."""
    out = _trainer(**{"feature_matching.enabled": True, "feature_matching.weight": 2.0}).run_step()
    assert out["loss_g_fm"] > 0 and torch.allclose(out["loss_g"], out["loss_g_adv"] + 2.0 * out["loss_g_fm"])


def test_ema_generator_differs_from_trained_g():
    """With EMA on the trainer keeps a separate, lagging copy of G."""
    tr = _trainer()
    for _ in range(3):
        tr.run_step()
    assert tr.g_ema is not None
    assert any(not torch.equal(a, b) for a, b in zip(tr.g_ema.parameters(), tr.g.parameters()))
    assert _trainer(**{"ema.enabled": False}).g_ema is None


def test_checkpoint_swap_snapshots_and_flags():
    """At step `every` the snapshots equal G and D and the swap flag is on for `length` steps."""
    tr = _trainer(**{"checkpoint_swap.enabled": True, "checkpoint_swap.every": 2, "checkpoint_swap.length": 1})
    tr.run_step()
    tr.run_step()
    assert not tr.swap_flag
    g_now = [q.detach().clone() for q in tr.g.parameters()]
    tr.run_step()  # step index 2: refresh snapshots, then train against them
    assert tr.swap_flag
    assert all(torch.equal(a, b) for a, b in zip(g_now, tr.g_old.parameters()))


def test_replay_buffer_is_prefilled_and_refreshed():
    """The replay buffer starts full of G samples and changes as training pushes fakes."""
    tr = _trainer()
    before = tr.replay.images.clone()
    tr.run_step()
    assert before.abs().sum() > 0 and not torch.equal(before, tr.replay.images)


def test_replay_buffer_stores_fakes_without_instance_noise():
    """Pushed fakes are G's tanh outputs, not the noised copies D saw (noise is drawn afresh on replay)."""
    tr = _trainer(**{"instance_noise.enabled": True, "instance_noise.std": 5.0, "replay.fraction": 0.5})
    fake = tr.g(tr._z()).detach()
    tr._d_update(tr._real(0), fake, torch.tensor(5.0))
    assert tr.replay.images.abs().max() <= 1.0


def test_architecture_switches_reach_the_model_config():
    """minibatch_stddev, g_dropout, checkerboard, instance_norm, leaky_relu_g change ModelConfig."""
    tr = _trainer(minibatch_stddev=True, instance_norm=True, leaky_relu_g=True,
                  **{"g_dropout.enabled": True, "checkerboard.enabled": True, "checkerboard.mode": "deconv_conv"})
    c = tr.cfg
    assert (c.minibatch_stddev, c.norm, c.g_activation, c.g_dropout, c.upsample) == (True, "instance", "leaky_relu", 0.5, "deconv_conv")


BOOL_SWITCHES = ["gaussian_latent", "separate_batches", "non_saturating", "minibatch_stddev", "instance_norm",
                 "leaky_relu_g", "dihedral_augment"]
ENABLED_SWITCHES = ["soft_labels", "noisy_labels", "instance_noise", "replay", "feature_matching", "historical_averaging",
                    "g_dropout", "checkerboard", "extra_steps", "moderated", "l2_penalty", "sgd_discriminator",
                    "checkpoint_swap", "ema", "failure_tracking"]


@given(flags=st.fixed_dictionaries({k: st.booleans() for k in BOOL_SWITCHES + ENABLED_SWITCHES}),
       one_sided=st.booleans())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_combination_of_switches_trains(flags, one_sided):
    """Every combination of hack switches runs two finite training steps."""
    overrides = {k if k in BOOL_SWITCHES else f"{k}.enabled": v for k, v in flags.items()}
    overrides["soft_labels.one_sided"] = one_sided
    overrides["checkpoint_swap.every"] = 2
    overrides["checkpoint_swap.length"] = 1
    tr = _trainer(**overrides)
    for _ in range(3):
        out = tr.run_step()
    assert all(torch.isfinite(v).all() for v in out.values())
