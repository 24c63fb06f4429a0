"""Tests for satgan.train.step: the Trainer's (1) update D / (2) update G phases, with each hack inside them."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satgan.train.registry import HACKS
from satgan.train.step import model_config

from train_helpers import tiny_params, trainer


def _adam_steps(opt: torch.optim.Optimizer) -> int:
    return int(next(iter(opt.state.values()))["step"])


def test_separate_batches_runs_d_on_all_real_then_all_fake():
    """separate_batches=true: D sees two batches of B; false: one batch of 2B."""
    for separate, expected in ((True, [4, 4]), (False, [8])):
        tr = trainer(separate_batches=separate, **{"replay.enabled": False})
        sizes: list[int] = []
        handle = tr.d.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
        tr.update_d(tr.real_batch(0), tr.g(tr.latent()).detach(), torch.zeros(()))
        handle.remove()
        assert sizes == expected


def test_replayed_fakes_get_their_own_d_batch():
    """With replay, D scores B fresh fakes as one batch and the past fakes as another (BN never mixes them)."""
    tr = trainer(**{"replay.enabled": True, "replay.fraction": 0.5})
    sizes: list[int] = []
    handle = tr.d.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    tr.update_d(tr.real_batch(0), tr.g(tr.latent()).detach(), torch.zeros(()))
    handle.remove()
    assert sizes == [4, 4, 2]


def test_extra_steps_update_d_and_g_that_many_times():
    """extra_steps d_steps=3, g_steps=2 gives 3 D and 2 G optimizer steps per iteration."""
    tr = trainer(**{"extra_steps.enabled": True, "extra_steps.d_steps": 3, "extra_steps.g_steps": 2})
    tr.run_step()
    assert (_adam_steps(tr.opt_d), _adam_steps(tr.opt_g)) == (3, 2)


def test_moderated_takes_between_zero_and_max_extra_d_steps():
    """moderated adds 0..max extra D steps and never extra G steps."""
    tr = trainer(**{"moderated.enabled": True, "moderated.max_extra_d_steps": 2})
    for _ in range(3):
        tr.run_step()
    assert 3 <= _adam_steps(tr.opt_d) <= 9 and _adam_steps(tr.opt_g) == 3


def test_sgd_discriminator_swaps_d_optimizer():
    """sgd_discriminator uses SGD for D and keeps Adam for G."""
    tr = trainer(**{"sgd_discriminator.enabled": True})
    assert isinstance(tr.opt_d, torch.optim.SGD) and isinstance(tr.opt_g, torch.optim.Adam)


def test_l2_penalty_is_logged_separately():
    """l2_penalty on: loss_d = loss_d_adv + loss_d_l2 with loss_d_l2 > 0; off: 0."""
    on = trainer(**{"l2_penalty.enabled": True, "l2_penalty.d": 0.1}).run_step()
    off = trainer().run_step()
    assert on["loss_d_l2"] > 0 and torch.allclose(on["loss_d"], on["loss_d_adv"] + on["loss_d_l2"])
    assert on["loss_g_l2"] > 0 and off["loss_d_l2"] == 0


def test_feature_matching_adds_its_loss():
    """feature_matching on: a positive loss_g_fm enters G's loss."""
    out = trainer(**{"feature_matching.enabled": True, "feature_matching.weight": 2.0}).run_step()
    assert out["loss_g_fm"] > 0 and torch.allclose(out["loss_g"], out["loss_g_adv"] + 2.0 * out["loss_g_fm"])


def test_ema_generator_differs_from_trained_g():
    """With EMA on the trainer keeps a separate, lagging copy of G."""
    tr = trainer()
    for _ in range(3):
        tr.run_step()
    assert tr.ema is not None
    assert any(not torch.equal(a, b) for a, b in zip(tr.ema.module.parameters(), tr.g.parameters()))
    assert trainer(**{"ema.enabled": False}).ema is None


def test_checkpoint_swap_snapshots_and_flags():
    """At step `every` the snapshots equal G and D and the swap flag is on for `length` steps."""
    tr = trainer(**{"checkpoint_swap.enabled": True, "checkpoint_swap.every": 2, "checkpoint_swap.length": 1})
    tr.run_step()
    tr.run_step()
    assert not tr.swap.flag
    g_now = [q.detach().clone() for q in tr.g.parameters()]
    tr.run_step()  # step index 2: refresh snapshots, then train against them
    assert tr.swap.flag
    assert all(torch.equal(a, b) for a, b in zip(g_now, tr.swap.g_old.parameters()))


def test_replay_buffer_is_prefilled_and_refreshed():
    """The replay buffer starts full of G samples and changes as training pushes fakes."""
    tr = trainer()
    before = tr.replay.images.clone()
    tr.run_step()
    assert before.abs().sum() > 0 and not torch.equal(before, tr.replay.images)


def test_replay_buffer_stores_fakes_without_instance_noise():
    """Pushed fakes are G's tanh outputs, not the noised copies D saw (noise is drawn afresh on replay)."""
    tr = trainer(**{"instance_noise.enabled": True, "instance_noise.std": 5.0, "replay.fraction": 0.5})
    fake = tr.g(tr.latent()).detach()
    tr.update_d(tr.real_batch(0), fake, torch.tensor(5.0))
    assert tr.replay.images.abs().max() <= 1.0


def test_architecture_switches_reach_the_model_config():
    """minibatch_stddev, g_dropout, checkerboard, instance_norm, leaky_relu_g change ModelConfig."""
    tr = trainer(minibatch_stddev=True, instance_norm=True, leaky_relu_g=True,
                  **{"g_dropout.enabled": True, "checkerboard.enabled": True, "checkerboard.mode": "deconv_conv"})
    c = tr.cfg
    assert (c.minibatch_stddev, c.norm, c.g_activation, c.g_dropout, c.upsample) == (True, "instance", "leaky_relu", 0.5, "deconv_conv")


@given(flags=st.fixed_dictionaries({h.params_key.removeprefix("train.hacks."): st.booleans() for h in HACKS}),
       one_sided=st.booleans())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_combination_of_switches_trains(flags, one_sided):
    """Every combination of the registry's hack switches runs three finite training steps."""
    overrides = dict(flags)
    overrides["soft_labels.one_sided"] = one_sided
    overrides["checkpoint_swap.every"] = 2
    overrides["checkpoint_swap.length"] = 1
    tr = trainer(**overrides)
    for _ in range(3):
        out = tr.run_step()
    assert all(torch.isfinite(v).all() for v in out.values())


def test_model_config_records_the_latent_distribution():
    """gaussian_latent picks the ModelConfig's latent: gaussian when on, uniform when off."""
    assert model_config(tiny_params(), 32, 3).latent == "gaussian"
    assert model_config(tiny_params({"gaussian_latent": False}), 32, 3).latent == "uniform"


def test_uniform_latent_trainer_draws_inside_the_cube():
    """With gaussian_latent off, the trainer's latents, replay prefill and fixed noise are all U(-1, 1)."""
    tr = trainer(gaussian_latent=False)
    for z in (tr.latent(), tr.fixed_noise):
        assert z.min() >= -1 and z.max() <= 1


def test_one_iteration_runs_d_then_g():
    """iteration() steps D's optimizer before G's: phase (1) then phase (2)."""
    tr = trainer()
    order: list[str] = []
    tr.opt_d.register_step_post_hook(lambda *a: order.append("d"))
    tr.opt_g.register_step_post_hook(lambda *a: order.append("g"))
    tr.run_step()
    assert order == ["d", "g"] and tr.step == 1
