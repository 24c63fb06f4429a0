"""Tests for satgan.train.params: the typed train section, its checks (each naming its own key) and the resume hash."""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from satgan.errors import ParamsError
from satgan.params import from_mapping
from satgan.train import TrainParams
from train_helpers import REPO

BASE = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
# A check relating two keys names the one it constrains (and shows the other's value).
CONSTRAINED_BY = {"hacks.checkpoint_swap.every": "hacks.checkpoint_swap.length", "batch_size": "hacks.replay.fraction"}


def numeric_keys(cls: type = TrainParams, prefix: str = "") -> list[str]:
    """Dotted keys (relative to ``train``) of every int, float or tuple-of-float field, nested dataclasses walked."""
    keys = []
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += numeric_keys(tp, f"{prefix}{name}.")
        elif tp in (int, float) or typing.get_origin(tp) is tuple:
            keys.append(prefix + name)
    return keys


NUMERIC = numeric_keys()


def _value_at(key: str) -> Any:
    node: Any = BASE
    for k in key.split("."):
        node = node[k]
    return node


BASE_VALUE = {k: _value_at(k) for k in NUMERIC}


def with_value(key: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    node = doc
    *parents, leaf = key.split(".")
    for k in parents:
        node = node[k]
    node[leaf] = value
    return doc


def load(doc: dict[str, Any]) -> TrainParams:
    return from_mapping(TrainParams, doc, "train", file="params.yaml")


bad_values = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e300, -1e300, 10**30, -(10**30), -1, 0, 0.5, True, None, "1", []]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**30), 10**30),
)


def test_shipped_train_section_loads():
    """params.yaml's train section is valid as shipped, and there are numeric keys to fuzz."""
    assert load(copy.deepcopy(BASE)).hacks.diffaugment.enabled is True and len(NUMERIC) > 30


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(NUMERIC), value=bad_values, as_item=st.booleans())
def test_any_value_of_any_numeric_key_loads_or_names_that_key(key, value, as_item):
    """NaN, infinities, huge, negative and mistyped values: accepted, or refused in one line naming that key."""
    if isinstance(BASE_VALUE[key], list) and as_item:
        value = [value, BASE_VALUE[key][1]]  # one bad item of a [lo, hi] pair
    try:
        load(with_value(key, value))
    except ParamsError as exc:
        msg = str(exc)
        assert "\n" not in msg and msg.startswith("params.yaml: train.")
        named = msg.removeprefix("params.yaml: train.").split(":")[0].split("[")[0]
        assert named == key or (named == CONSTRAINED_BY.get(key) and repr(value) in msg), msg



@pytest.mark.parametrize(("key", "value"), [
    ("hacks.failure_tracking.grad_norm_limit", -1.0),
    ("hacks.instance_noise.decay_iters", 0),
    ("hacks.g_layer_noise.std", 0.0), ("hacks.g_layer_noise.decay_iters", 0),
    ("hacks.l2_penalty.d", -1e-5),
    ("hacks.sgd_discriminator.momentum", 1.5),
    ("data_budget_mb", -1),
    ("hacks.extra_steps.g_steps", 0),
])
def test_range_errors_name_their_own_key(key, value):
    """The keys issue 10 found reported under a neighbour's name now name themselves."""
    with pytest.raises(ParamsError, match=rf"^params\.yaml: train\.{key}: expected .*, got {value!r}$"):
        load(with_value(key, value))


@pytest.mark.parametrize(("key", "value"), [
    ("lr_g", float("nan")), ("lr_d", float("inf")), ("hacks.instance_noise.std", float("nan")),
    ("hacks.failure_tracking.grad_norm_limit", float("nan")),
])
def test_non_finite_floats_are_refused_naming_the_key(key, value):
    """NaN and infinity are refused at load time (not as a divergence at step 5, nor a silently disabled warning)."""
    with pytest.raises(ParamsError, match=rf"train\.{key}: expected a finite number"):
        load(with_value(key, value))


@pytest.mark.parametrize(("key", "value"), [("ngf", 10_000_000), ("nz", 5000), ("hacks.replay.size", 10**9)])
def test_sizes_that_cannot_be_allocated_are_refused(key, value):
    """Nets and buffers far too large to build are refused at load, naming the key."""
    with pytest.raises(ParamsError, match=rf"train\.{key}: expected 1 <= .* got {value}"):
        load(with_value(key, value))


def test_replay_fraction_must_leave_fresh_fakes():
    """A replay fraction that rounds to the whole batch is refused under hacks.replay.fraction."""
    doc = with_value("batch_size", 4)
    doc["hacks"]["replay"]["enabled"] = True
    doc["hacks"]["replay"]["fraction"] = 0.9
    with pytest.raises(ParamsError, match=r"train\.hacks\.replay\.fraction: expected a fraction that leaves fresh fakes"):
        load(doc)


def test_resume_hash_ignores_cadence_keys_only():
    """iterations, the *_every keys and d_view (a log, not training) do not change the resume hash; any other key does."""
    base = load(copy.deepcopy(BASE))
    same = load({**copy.deepcopy(BASE), "iterations": 5, "checkpoint_every": 7, "log_every": 3, "sample_every": 9,
                 "d_view": not BASE["d_view"]})
    other = load({**copy.deepcopy(BASE), "lr_g": 0.001})
    assert base.resume_hash() == same.resume_hash() != other.resume_hash()


@pytest.mark.parametrize(("other_key", "other_value", "named"), [
    ("soft_labels", {"enabled": True}, "soft_labels.enabled is true"),
    ("non_saturating", False, "non_saturating is false"),
])
def test_hinge_loss_refuses_bce_only_settings_naming_both_keys(other_key, other_value, named):
    """hinge_loss with soft labels (no target to soften) or the minimax G loss (no hinge form) is refused, naming both keys."""
    doc = with_value("hacks.hinge_loss", True)
    doc["hacks"]["soft_labels"]["enabled"] = False
    if isinstance(other_value, dict):
        doc["hacks"][other_key].update(other_value)
    else:
        doc["hacks"][other_key] = other_value
    with pytest.raises(ParamsError, match=rf"^params\.yaml: train\.hacks\.hinge_loss: expected false while {named} .*got True$"):
        load(doc)


def test_hinge_loss_with_noisy_labels_and_non_saturating_loads():
    """hinge_loss loads with soft labels off: noisy labels (sign flips) and non_saturating stay allowed."""
    doc = with_value("hacks.hinge_loss", True)
    doc["hacks"]["soft_labels"]["enabled"] = False
    doc["hacks"]["noisy_labels"]["enabled"] = True
    hacks = load(doc).hacks
    assert hacks.hinge_loss and hacks.noisy_labels.enabled and hacks.non_saturating


@pytest.mark.parametrize(("policy", "fragment"), [
    ([], "policy: expected a non-empty list of distinct policies"),
    (["color", "color"], "policy: expected a non-empty list of distinct policies"),
    (["colour"], r"policy\[0\]: expected one of 'color', 'translation', 'cutout'"),
])
def test_diffaugment_policy_is_checked(policy, fragment):
    """An empty, repeated or misspelt DiffAugment policy is refused under hacks.diffaugment.policy."""
    with pytest.raises(ParamsError, match=rf"train\.hacks\.diffaugment\.{fragment}"):
        load(with_value("hacks.diffaugment.policy", policy))


def test_augment_policy_literal_matches_augment_module():
    """The params' policy names are exactly satgan.augment's POLICIES."""
    from satgan.augment import POLICIES
    from satgan.train.params import AugmentPolicy

    assert set(typing.get_args(AugmentPolicy)) == set(POLICIES)


def test_cpu_bf16_takes_auto_on_or_off():
    """cpu_bf16 is one of auto, on, off."""
    assert load(with_value("cpu_bf16", "on")).cpu_bf16 == "on"
    with pytest.raises(ParamsError, match=r"train\.cpu_bf16: expected one of 'auto', 'on', 'off'"):
        load(with_value("cpu_bf16", True))


def test_conditional_takes_none_projection_or_acgan():
    """train.conditional ships as none; the two conditional modes load; anything else names the key."""
    assert load(BASE).conditional == "none" and load(BASE).acgan_weight == 1.0
    for mode in ("projection", "acgan"):
        assert load({**BASE, "conditional": mode}).conditional == mode
    with pytest.raises(ParamsError, match=r"params\.yaml: train\.conditional: expected one of 'none', 'projection', 'acgan'"):
        load({**BASE, "conditional": "cgan"})
    with pytest.raises(ParamsError, match=r"train\.acgan_weight: expected >= 0, got -1"):
        load({**BASE, "acgan_weight": -1})


def test_texture_switches_ship_off_with_their_settings():
    """bilinear_g, g_pixel_noise and highpass_d load from params.yaml off (docs/experiments.md 0i), their settings kept."""
    hacks = load(copy.deepcopy(BASE)).hacks
    assert not (hacks.bilinear_g.enabled or hacks.g_pixel_noise.enabled or hacks.highpass_d.enabled)
    assert hacks.highpass_d.before_cutout and hacks.bilinear_g.blocks >= 1 and hacks.g_pixel_noise.blocks >= 1


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("hacks.bilinear_g.blocks", 0, "1 <= blocks <= 5"),
    ("hacks.bilinear_g.blocks", 6, "1 <= blocks <= 5"),
    ("hacks.g_pixel_noise.blocks", 5, "1 <= blocks <= 4"),
])
def test_texture_switch_depths_name_their_key(key, value, fragment):
    """A layer count no image size has is refused under its own key."""
    with pytest.raises(ParamsError, match=rf"^params\.yaml: train\.{re.escape(key)}: expected {re.escape(fragment)}"):
        load(with_value(key, value))


def test_highpass_before_cutout_needs_cutout_last():
    """highpass_d.before_cutout with cutout before another DiffAugment op is refused naming the key; cutout last loads."""
    doc = with_value("hacks.diffaugment.policy", ["cutout", "color"])
    doc["hacks"]["highpass_d"]["enabled"] = True
    with pytest.raises(ParamsError, match=r"train\.hacks\.highpass_d\.before_cutout: expected false unless cutout is the last op"):
        load(doc)
    doc["hacks"]["highpass_d"]["before_cutout"] = False
    assert load(doc).hacks.highpass_d.enabled
    doc = with_value("hacks.diffaugment.policy", ["translation", "cutout"])
    doc["hacks"]["highpass_d"]["enabled"] = True
    assert load(doc).hacks.highpass_d.before_cutout
