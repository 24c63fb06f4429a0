"""Tests for satgan.train.step: the Trainer's (1) update D / (2) update G phases, with each hack inside them."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.utils as nn_utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from satgan.errors import ParamsError
from satgan.imageops import make_grid
from satgan.losses import d_hinge, r1_penalty
from satgan.train import fastpath as FP
from satgan.train.registry import HACKS
from satgan.train.step import d_accuracy, model_config
from train_helpers import ARRAY, CONDITIONALS, LABELS, every_hack_on, tiny_params, trainer


def _adam_steps(opt: torch.optim.Optimizer) -> int:
    return int(next(iter(opt.state.values()))["step"])


def test_separate_batches_runs_d_on_all_real_then_all_fake():
    """separate_batches=true: D sees two batches of B; false: one batch of 2B."""
    for separate, expected in ((True, [4, 4]), (False, [8])):
        tr = trainer(separate_batches=separate, **{"replay.enabled": False})
        sizes: list[int] = []
        handle = tr.d.register_forward_hook(lambda m, i, o, sizes=sizes: sizes.append(i[0].shape[0]))
        tr.update_d(tr.real_batch(0), tr.g(tr.latent()).detach(), torch.zeros(()))
        handle.remove()
        assert sizes == expected


def test_one_d_forward_when_d_scores_each_image_on_its_own():
    """With spectral_norm (no BN) or instance_norm, separate_batches needs no separate forwards: one batch of 2B + replay."""
    for switch in ("spectral_norm", "instance_norm"):
        tr = trainer(**{switch: True, "replay.enabled": True, "replay.fraction": 0.5})
        sizes: list[int] = []
        handle = tr.d.register_forward_hook(lambda m, i, o, sizes=sizes: sizes.append(i[0].shape[0]))
        tr.update_d(tr.real_batch(0), tr.g(tr.latent()).detach(), torch.zeros(()))
        handle.remove()
        assert sizes == [10], switch
    assert trainer(spectral_norm=True, minibatch_stddev=True).d_mixes_batch  # the stddev layer mixes the batch


def test_replayed_fakes_get_their_own_d_batch():
    """With replay, D scores B fresh fakes as one batch and the past fakes as another (BN never mixes them)."""
    tr = trainer(**{"replay.enabled": True, "replay.fraction": 0.5})
    sizes: list[int] = []
    handle = tr.d.register_forward_hook(lambda m, i, o, sizes=sizes: sizes.append(i[0].shape[0]))
    tr.update_d(tr.real_batch(0), tr.g(tr.latent()).detach(), torch.zeros(()))
    handle.remove()
    assert sizes == [4, 4, 2]


def test_update_d_returns_the_logits_beside_metrics_that_hold_only_metrics():
    """update_d's metrics are scalar metric tensors (no logits in them); D's logits come back as their own value."""
    tr = trainer()
    out, logits = tr.update_d(tr.real_batch(0), tr.g(tr.latent()).detach(), None)
    assert all(v.ndim == 0 and not k.startswith("_") for k, v in out.items())
    assert logits.real.shape == logits.fake.shape == (tr.batch,)
    assert torch.equal(out["d_real"], torch.sigmoid(logits.real.float()).mean())


def test_d_fakes_adds_replayed_fakes_and_leaves_fresh_ones_as_g_made_them():
    """D's fake side: the fresh fakes unchanged (no swap), plus n_replay past fakes with no labels (unconditional)."""
    tr = trainer(**{"replay.enabled": True, "replay.fraction": 0.5, "checkpoint_swap.enabled": False})
    fake = tr.g(tr.latent()).detach()
    fakes = tr.d_fakes(fake, None)
    assert fakes.fake is fake and fakes.old is not None and fakes.old.shape == (tr.n_replay, *fake.shape[1:])
    assert fakes.y_fake is None and fakes.y_old is None and trainer().d_fakes(fake, None).old is None


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
    tr = trainer(**{"ema.enabled": True})
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
    tr = trainer(**{"replay.enabled": True})
    before = tr.replay.images.clone()
    tr.run_step()
    assert before.abs().sum() > 0 and not torch.equal(before, tr.replay.images)


def test_replay_buffer_stores_fakes_without_instance_noise():
    """Pushed fakes are G's tanh outputs, not the noised copies D saw (noise is drawn afresh on replay)."""
    tr = trainer(**{"instance_noise.enabled": True, "instance_noise.std": 5.0, "replay.enabled": True, "replay.fraction": 0.5})
    fake = tr.g(tr.latent()).detach()
    tr.update_d(tr.real_batch(0), fake, torch.tensor(5.0))
    assert tr.replay.images.abs().max() <= 1.0


def test_architecture_switches_reach_the_model_config():
    """minibatch_stddev, g_dropout, checkerboard, instance_norm, leaky_relu_g, spectral_norm, avg_pool_d, g_layer_noise change ModelConfig."""
    tr = trainer(minibatch_stddev=True, instance_norm=True, leaky_relu_g=True, spectral_norm=True, avg_pool_d=True,
                 **{"g_dropout.enabled": True, "checkerboard.enabled": True, "checkerboard.mode": "pixel_shuffle",
                    "g_layer_noise.enabled": True})
    c = tr.cfg
    assert (c.minibatch_stddev, c.norm, c.g_activation, c.g_dropout, c.upsample, c.spectral_norm, c.downsample,
            c.g_layer_noise) == (True, "instance", "leaky_relu", 0.5, "pixel_shuffle", True, "avg_pool", True)
    assert model_config(tiny_params(), 32, 3).downsample == "strided" and not model_config(tiny_params(), 32, 3).g_layer_noise


def test_spectral_norm_keeps_d_one_lipschitz_per_layer_while_training():
    """With spectral_norm, after training steps every D conv's effective weight still has largest singular value ~1."""
    tr = trainer(spectral_norm=True)
    for _ in range(4):
        tr.run_step()
    convs = [m for m in tr.d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(nn_utils.parametrize.is_parametrized(m, "weight") for m in convs)
    sigmas = [torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item() for m in convs]
    assert all(0.8 < s_ < 1.2 for s_ in sigmas), sigmas


def _d_inputs(tr) -> list[torch.Tensor]:
    """Every batch D is called on from now on (D's own steps, G's step, feature matching), collected by a hook on its first layer."""
    seen: list[torch.Tensor] = []
    tr.d[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    return seen


def _cutout_in_every_image(x: torch.Tensor) -> bool:
    """Each image has at least (side/4)^2 pixels zero in every channel (a border-clipped cutout square)."""
    zero = (x == 0).all(1).flatten(1).sum(1)
    return bool((zero >= (x.shape[-1] // 4) ** 2).all())


def test_diffaugment_reaches_every_image_d_sees_in_both_steps():
    """diffaugment (cutout, p = 1): reals, fresh fakes, replayed fakes in D's step and fakes in G's step all arrive cut out."""
    # highpass_d off: its packed (N, 2C) input is tested on its own (tests/test_train_hacks.py)
    tr = trainer(**{"highpass_d.enabled": False, "diffaugment.enabled": True, "diffaugment.policy": ["cutout"], "diffaugment.p": 1.0,
                    "instance_noise.enabled": False, "feature_matching.enabled": True, "replay.enabled": True})
    seen = _d_inputs(tr)
    tr.run_step()
    assert len(seen) == 5  # D: real, fake, replayed; G: the fakes' forward (logits + features) and the reals' features
    assert all(_cutout_in_every_image(x.float()) for x in seen)
    off = trainer(**{"instance_noise.enabled": False, "diffaugment.enabled": False})
    seen_off = _d_inputs(off)
    off.run_step()
    assert not any(_cutout_in_every_image(x.float()) for x in seen_off)


def test_diffaugment_lets_g_learn_through_the_augmentation():
    """In G's step the fakes are augmented inside the graph: G's gradient is non-zero and flows through translation."""
    tr = trainer(**{"diffaugment.enabled": True, "diffaugment.policy": ["translation"], "ema.enabled": False})
    tr.update_g(tr.g(tr.latent()), tr.real_batch(0), None)
    grads = [q.grad for q in tr.g.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_ada_moves_p_every_k_iterations_by_the_sign_of_r_t_and_logs_it():
    """ADA: p changes only every `every` iterations, by sign(r_t - target) x images seen / (speed_kimg x 1000)."""
    tr = trainer(**{"diffaugment.enabled": True, "diffaugment.p": 0.5, "diffaugment.ada.enabled": True,
                    "diffaugment.ada.every": 2, "diffaugment.ada.speed_kimg": 1.0, "diffaugment.ada.target": 0.3})
    assert tr.parts["ada"] is tr.ada and tr.augment.p is tr.ada.p
    first = tr.run_step()
    assert first["ada_p"].item() == 0.5  # iteration 1 of 2: nothing yet
    second = tr.run_step()
    r_t = second["ada_r_t"].item()
    step = (1 if r_t > 0.3 else -1 if r_t < 0.3 else 0) * 2 * tr.batch / 1000
    assert second["ada_p"].item() == pytest.approx(0.5 + step, abs=1e-6) and abs(step) > 0


def test_r1_penalty_is_the_gradient_norm_of_d_at_the_reals():
    """r1 on a due iteration: loss_d_r1 = gamma/2 E||grad_x D(x)||^2 (checked against an independent D copy), added x every."""
    tr = trainer(tiny_params({"r1.enabled": True, "r1.gamma": 2.0, "r1.every": 3, "replay.enabled": False,
                              "instance_noise.enabled": False, "diffaugment.enabled": False}, cpu_bf16="off"))
    d_before = copy.deepcopy(tr.d)
    real, fake = tr.real_batch(0), tr.g(tr.latent()).detach()
    out, _ = tr.update_d(real, fake, None, r1=True)
    assert out["loss_d_r1"].item() == pytest.approx(r1_penalty(d_before, real, 2.0).item(), rel=1e-4)
    assert out["loss_d_r1"] > 0 and torch.allclose(out["loss_d"], out["loss_d_adv"] + 3 * out["loss_d_r1"])


def test_r1_is_lazy_and_costs_no_extra_d_forward():
    """r1.every = 3: a new penalty on iterations 0 and 3 only (the last one is logged between), with no extra D forward."""
    on = trainer(**{"r1.enabled": True, "r1.every": 3})
    calls_on = _d_inputs(on)
    values = [on.run_step()["loss_d_r1"].item() for _ in range(4)]
    assert values[0] > 0 and values[0] == values[1] == values[2] != values[3]
    off = trainer()
    calls_off = _d_inputs(off)
    for _ in range(4):
        off.run_step()
    assert len(calls_on) == len(calls_off)


def test_hinge_loss_scores_d_and_g_with_the_hinge():
    """hinge_loss: D's loss is E[relu(1 - D(x))] + E[relu(1 + D(G(z)))] and G's is -E[D(G(z))]."""
    tr = trainer(hinge_loss=True, **{"soft_labels.enabled": False, "noisy_labels.enabled": False,
                                     "replay.enabled": False, "instance_noise.enabled": False})
    out, logits = tr.update_d(tr.real_batch(0), tr.g(tr.latent()).detach(), None)
    expected = d_hinge(logits.real.float(), logits.fake.float())
    assert torch.allclose(out["loss_d_adv"], expected)
    seen: list[torch.Tensor] = []
    tr.d.register_forward_hook(lambda m, i, o: seen.append(o.detach().float()))
    out_g = tr.update_g(tr.g(tr.latent()), tr.real_batch(0), None)
    assert torch.allclose(out_g["loss_g_adv"], -seen[0].mean())


def test_instance_noise_is_not_drawn_once_it_has_decayed():
    """After decay_iters, D's inputs are the images themselves (no N(0, 0) draw costing time)."""
    tr = trainer(**{"instance_noise.enabled": True, "instance_noise.decay_iters": 1, "dihedral_augment": False,
                    "replay.enabled": False, "diffaugment.enabled": False})
    tr.run_step()
    seen = _d_inputs(tr)
    torch.manual_seed(5)
    expected_real = tr.feed.batch(0)
    torch.manual_seed(5)
    tr.run_step()
    assert torch.equal(seen[0].float(), expected_real.float())


@given(flags=st.fixed_dictionaries({h.params_key.removeprefix("train.hacks."): st.booleans() for h in HACKS}),
       one_sided=st.booleans(), upsample=st.sampled_from(["deconv_conv", "resize_conv", "pixel_shuffle"]),
       ada=st.booleans(), conditional=st.sampled_from(["none", *CONDITIONALS]))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_combination_of_switches_trains(flags, one_sided, upsample, ada, conditional):
    """Every legal combination of the registry's hack switches, unconditional or either conditional mode, runs three
    finite steps; an illegal one names both keys."""
    overrides = dict(flags)
    overrides.update({"soft_labels.one_sided": one_sided, "checkpoint_swap.every": 2, "checkpoint_swap.length": 1,
                      "checkerboard.mode": upsample, "diffaugment.ada.enabled": ada, "diffaugment.ada.every": 2,
                      "r1.every": 2})
    hinge_clash = flags["hinge_loss"] and (flags["soft_labels.enabled"] or not flags["non_saturating"])
    if hinge_clash:
        with pytest.raises(ParamsError, match=r"train\.hacks\.hinge_loss: expected false while (soft_labels\.enabled is true|non_saturating is false)"):
            tiny_params(overrides, conditional=conditional)
        return
    tr = trainer(tiny_params(overrides, conditional=conditional))
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


def test_d_accuracy_thresholds_at_one_half_whatever_the_targets():
    """d_acc_real / d_acc_fake are the shares of reals with sigmoid > 0.5 and of fakes with sigmoid <= 0.5."""
    acc = d_accuracy(torch.tensor([2.0, -1.0, 0.5, 0.0]), torch.tensor([-3.0, 0.0, 1.0]))
    assert acc["d_acc_real"].item() == 0.5 and acc["d_acc_fake"].item() == pytest.approx(2 / 3)
    assert tuple(acc) == FP.ACCURACY_METRICS


def test_step_logs_d_accuracy_with_soft_labels():
    """With soft labels on, the step still reports D's accuracy on reals and fakes as shares in [0, 1]."""
    out = trainer(**{"soft_labels.enabled": True}).run_step()
    for key in ("d_acc_real", "d_acc_fake"):
        assert 0.0 <= float(out[key]) <= 1.0 and float(out[key]) * 4 == round(float(out[key]) * 4)  # batch of 4


def test_g_dropout_at_sampling_reaches_the_model_config():
    """g_dropout.at_sampling reaches ModelConfig only with g_dropout enabled."""
    on = tiny_params({"g_dropout.enabled": True, "g_dropout.at_sampling": True})
    off = tiny_params({"g_dropout.enabled": False, "g_dropout.at_sampling": True})
    assert model_config(on, 32, 3).g_dropout_at_sampling and not model_config(off, 32, 3).g_dropout_at_sampling


def test_g_layer_noise_std_follows_the_step_in_every_noise_layer():
    """With g_layer_noise on, iteration k sets std * max(0, 1 - k/decay_iters) in each of G's noise layers and logs it."""
    tr = trainer(**{"g_layer_noise.enabled": True, "g_layer_noise.std": 0.2, "g_layer_noise.decay_iters": 4})
    assert len(tr.g_noise) == tr.cfg.n_blocks
    for k in range(6):
        out = tr.run_step()
        expected = 0.2 * max(0.0, 1 - k / 4)
        assert out["g_layer_noise_std"].item() == pytest.approx(expected)
        assert all(m.std.item() == pytest.approx(expected) for m in tr.g_noise)


def test_g_layer_noise_perturbs_g_in_training_only():
    """G with noise layers gives different images for one latent in training mode and the same ones in eval mode."""
    # g_pixel_noise off: it draws when sampling too, by design (StyleGAN); this test is about g_layer_noise alone
    tr = trainer(**{"g_pixel_noise.enabled": False, "g_layer_noise.enabled": True, "g_layer_noise.std": 0.5})
    tr.run_step()
    z = tr.latent()
    with torch.no_grad():
        assert not torch.equal(tr.g(z), tr.g(z))
        tr.g.eval()
        assert torch.equal(tr.g(z), tr.g(z))


def test_g_layer_noise_is_not_drawn_once_it_has_decayed():
    """Eager runs switch G's noise layers off from decay_iters on (no N(0, 0) draws costing time)."""
    tr = trainer(**{"g_layer_noise.enabled": True, "g_layer_noise.decay_iters": 2})
    tr.run_step()
    assert all(m.active for m in tr.g_noise)
    tr.run_step()
    tr.run_step()
    assert not any(m.active for m in tr.g_noise)


def test_d_view_holds_exactly_the_batches_d_received():
    """d_view: after a logged iteration the buffers equal D's first two inputs (augmented, noisy reals; then fakes)."""
    # highpass_d off: D then receives exactly the (N, C) batches the view keeps
    tr = trainer(**{"highpass_d.enabled": False, "instance_noise.enabled": True, "replay.enabled": False})
    seen = _d_inputs(tr)
    tr.run_step()
    n = tr.view.real.shape[0]
    assert n == min(tr.batch, tr.p.n_samples)
    assert torch.equal(tr.view.real, seen[0][:n].float()) and torch.equal(tr.view.fake, seen[1][:n].float())
    assert not torch.equal(tr.view.real, tr.view.fake)


def test_d_view_copies_only_on_logged_iterations_when_eager():
    """Eager: iteration 0 and multiples of sample_every are copied; the iterations between leave the buffers alone."""
    tr = trainer(tiny_params(sample_every=3))
    tr.run_step()
    real, fake = tr.view.real.clone(), tr.view.fake.clone()
    tr.run_step()
    tr.run_step()
    assert torch.equal(tr.view.real, real) and torch.equal(tr.view.fake, fake)
    tr.run_step()
    assert not torch.equal(tr.view.real, real)
    assert [tr.view.due(k) for k in range(7)] == [True, False, False, True, False, False, True]


def test_d_view_off_keeps_no_buffers():
    """d_view false: no buffers, nothing copied in the step."""
    assert trainer(tiny_params(d_view=False)).view is None


def test_d_view_grid_shows_reals_left_and_fakes_right():
    """The logged image is the real grid, a white gap and the fake grid, side by side (uint8 H x W x C)."""
    tr = trainer()
    tr.run_step()
    grid = tr.view.grid()
    half = (grid.shape[1] - 8) // 2
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert (grid[:, half:half + 8] == 255).all()
    assert np.array_equal(grid[:, :half], make_grid(tr.view.real.numpy(), nrow=2))


# ---------------------------------------------------------------- class-conditional training


def _d_calls(tr) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """(images, labels) of every call of D's module from now on (D's steps and G's; not feature matching's own reads)."""
    calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    tr.d.register_forward_pre_hook(lambda m, args: calls.append((args[0], args[1] if len(args) > 1 else None)))
    return calls


def test_real_labels_travel_with_the_real_batch():
    """labelled_real_batch returns each real tile's own label (flips and rotations keep it)."""
    tr = trainer(tiny_params({"dihedral_augment": False}, conditional="projection"))
    x, y = tr.labelled_real_batch(0)
    rows = [next(i for i, a in enumerate(ARRAY) if torch.equal(row, torch.from_numpy(a))) for row in x]
    assert y.dtype == torch.int64 and y.tolist() == LABELS[rows].tolist()


def test_fake_labels_follow_the_training_label_distribution():
    """Fake classes are the labels of random training tiles: 18 of 20 tiles in class 0 gives ~90% class-0 fakes."""
    labels = np.array([0] * 18 + [1, 2], dtype=np.int64)
    tr = trainer(tiny_params(conditional="acgan"), labels=labels)
    drawn = torch.cat([tr.fake_labels(1000) for _ in range(4)])
    assert drawn.dtype == torch.int64 and set(drawn.tolist()) == {0, 1, 2}
    assert abs((drawn == 0).float().mean().item() - 0.9) < 0.03
    assert trainer().fake_labels() is None and trainer().class_labels is None


@pytest.mark.parametrize("separate", [True, False])
def test_projection_d_scores_every_batch_with_its_labels(separate):
    """projection: every D call (reals, fresh and replayed fakes, G's step) gets the labels of its images."""
    tr = trainer(tiny_params({"separate_batches": separate, "replay.enabled": True, "replay.fraction": 0.5},
                             conditional="projection"))
    calls = _d_calls(tr)
    tr.run_step()
    assert [len(x) for x, _ in calls] == ([4, 4, 2, 4] if separate else [10, 4])
    assert all(y is not None and y.shape == (len(x),) and y.dtype == torch.int64 for x, y in calls)


def test_acgan_adds_the_weighted_class_loss_to_d_and_g():
    """acgan: loss_d = adv + w * CE(reals and fakes), loss_g = adv + w * CE(fakes); accuracies logged in [0, 1]."""
    out = trainer(tiny_params(conditional="acgan", acgan_weight=0.5)).run_step()
    assert torch.allclose(out["loss_d"], out["loss_d_adv"] + 0.5 * out["loss_d_cls"])
    assert torch.allclose(out["loss_g"], out["loss_g_adv"] + 0.5 * out["loss_g_cls"])
    assert out["loss_d_cls"] > 0 and out["loss_g_cls"] > 0
    for key in ("cls_acc_real", "cls_acc_fake"):
        assert 0.0 <= float(out[key]) <= 1.0
    plain = trainer(tiny_params(conditional="projection")).run_step()
    assert not {"loss_d_cls", "loss_g_cls", "cls_acc_real"} & set(plain)


def test_acgan_class_loss_is_the_cross_entropy_of_ds_classifier():
    """D's class loss is CE(classifier(reals), y_real) + CE(classifier(fakes), y_fake), from the same forwards."""
    import torch.nn.functional as F

    tr = trainer(tiny_params({"diffaugment.enabled": False, "replay.enabled": False}, conditional="acgan",
                             cpu_bf16="off"))
    seen: list[torch.Tensor] = []
    tr.d.classifier.register_forward_hook(lambda m, i, o: seen.append(o.detach().flatten(1)))
    (real, y_real), y_fake = tr.labelled_real_batch(0), tr.fake_labels()
    out, _ = tr.update_d(real, tr.g(tr.latent(), y_fake).detach(), None, y_real=y_real, y_fake=y_fake)
    expected = F.cross_entropy(seen[0], y_real) + F.cross_entropy(seen[1], y_fake)
    assert out["loss_d_cls"].item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="needs y_real and y_fake"):
        tr.update_d(real, real, None)


def test_labelled_data_without_conditional_trains_exactly_as_unlabelled_data():
    """conditional none ignores the labels: the same weights as a trainer given none (no extra random draws)."""
    a = trainer(tiny_params())  # each trainer seeds torch: build and run one, then the other
    for _ in range(3):
        a.run_step()
    b = trainer(tiny_params(), labels=LABELS)
    for _ in range(3):
        b.run_step()
    assert b.class_labels is None and b.feed.labels is None
    assert all(torch.equal(x, y) for x, y in zip(a.g.state_dict().values(), b.g.state_dict().values()))


@pytest.mark.parametrize("conditional", CONDITIONALS)
def test_conditional_sample_grid_has_one_row_per_class_with_shared_noise(conditional):
    """The fixed-noise grid of a conditional model: a row per class, the same latent down each column."""
    tr = trainer(tiny_params(conditional=conditional, n_samples=7))  # 3 classes: 2 latents per row
    assert tr.grid_nrow == 2 and tr.fixed_labels.tolist() == [0, 0, 1, 1, 2, 2]
    z = tr.fixed_noise.view(3, 2, -1)
    assert torch.equal(z[0], z[1]) and torch.equal(z[0], z[2]) and not torch.equal(z[0, 0], z[0, 1])
    assert tr.sample_grid().shape == (3 * 34 + 2, 2 * 34 + 2, 3)


@pytest.mark.parametrize("conditional", CONDITIONALS)
def test_every_hack_with_a_conditional_model(conditional):
    """Every hack on (replay, swap, EMA, feature matching, stddev, SN, extra and moderated steps, ...) trains a
    conditional model: finite steps, the EMA copy carries the class embedding, the replay buffer its labels."""
    tr = trainer(every_hack_on(conditional=conditional))
    for _ in range(3):
        out = tr.run_step()
    assert all(torch.isfinite(v).all() for v in out.values())
    assert tr.replay.labels is not None and set(tr.replay.labels.tolist()) <= {0, 1, 2}
    assert not torch.equal(tr.ema.module.embed.weight, tr.g.embed.weight)
    assert isinstance(tr.swap.g_old.embed, torch.nn.Embedding)


def test_hinge_loss_with_a_projection_d():
    """hinge_loss with projection: D's loss is the hinge of the projected logits."""
    tr = trainer(tiny_params({"hinge_loss": True, "replay.enabled": False, "diffaugment.enabled": False},
                             conditional="projection"))
    (real, y_real), y_fake = tr.labelled_real_batch(0), tr.fake_labels()
    out, logits = tr.update_d(real, tr.g(tr.latent(), y_fake).detach(), None, y_real=y_real, y_fake=y_fake)
    assert torch.allclose(out["loss_d_adv"], d_hinge(logits.real.float(), logits.fake.float()))


def test_conditional_model_config_needs_labels_and_counts_classes():
    """model_config takes the class count only when train.conditional is on; a conditional trainer needs labels."""
    assert model_config(tiny_params(), 32, 3, n_classes=7).n_classes == 0
    cfg = model_config(tiny_params(conditional="acgan"), 32, 3, n_classes=7)
    assert (cfg.conditional, cfg.n_classes) == ("acgan", 7)
    from satgan.train import Dist, Trainer

    with pytest.raises(ValueError, match="needs the tiles' labels"):
        Trainer(tiny_params(conditional="acgan"), cfg, ARRAY, torch.device("cpu"), Dist())
