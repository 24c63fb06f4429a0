"""Tests for satgan.train.fastpath: the fast path is checked against eager steps and falls back without losing a step.

The real fast paths need CUDA (tests/test_cuda.py); here fake ones, injected through
``fastpath.choose``, raise or disagree the way a broken capture or graph would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import satgan.train.fastpath as FP
from satgan.train import train
from train_helpers import (
    CONDITIONALS,
    assert_same_weights,
    every_hack_on,
    run_dirs,
    tiny_params,
    trainer,
    write_labelled_tiles,
    write_tiles,
)


class FakeFast:
    """A fast path that runs the eager iteration, then misbehaves as told at its ``bad_call``-th step()."""

    name = "fake"

    def __init__(self, tr, how: str | None = None, bad_call: int = 1, warmup_steps: int = 1) -> None:
        self.tr, self.how, self.bad_call, self.warmup_steps = tr, how, bad_call, warmup_steps
        self.calls = 0
        self.closed = False
        self.last: dict[str, torch.Tensor] = {}

    def warmup(self) -> dict[str, torch.Tensor]:
        if self.how == "warmup_raises":
            next(self.tr.d.parameters()).data.add_(1.0)  # a half-done step, then the failure
            raise RuntimeError("warm-up broke")
        return self.tr.iteration()

    def step(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        bad = self.calls == self.bad_call
        if bad and self.how == "capture_raises":
            self.tr.iteration()  # state changed before the error, as a half-run capture may leave it
            raise RuntimeError("operation not permitted when stream is capturing")
        if bad and self.how == "stale_outputs" and self.last:
            self.tr.iteration()
            return self.last  # a graph whose outputs are not refreshed
        out = self.tr.iteration()
        if bad and self.how == "wrong_update":
            with torch.no_grad():
                for q in self.tr.d.parameters():
                    q.add_(1e-3)  # a step that moved D's weights differently from eager
        self.last = {k: v.clone() for k, v in out.items()}
        return out

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def tiles(tmp_path_factory, rsscn7_files) -> Path:
    """12 real RSSCN7 tiles at 32x32."""
    return write_tiles(tmp_path_factory.mktemp("prepared"), rsscn7_files[::24][:12])


def _inject(monkeypatch, **fake) -> list[FakeFast]:
    """Make every trainer built from now on use a FakeFast(**fake); returns the list of those made."""
    made: list[FakeFast] = []

    def choose(tr):
        made.append(FakeFast(tr, **fake))
        return made[-1], None

    monkeypatch.setattr(FP, "choose", choose)
    return made


def _eager_reference(tiles: Path, tmp_path: Path, p) -> Path:
    model, ck, _ = run_dirs(tmp_path, "eager")
    train(p, tiles, model, ck, None)
    return model


@pytest.mark.parametrize(("how", "bad_call", "reason"), [
    ("capture_raises", 1, "fake failed: RuntimeError: operation not permitted when stream is capturing"),
    ("wrong_update", 2, "fake disagrees with eager at its check step 2: d's weights are"),
    ("stale_outputs", 3, "fake disagrees with eager at its check step 3: loss_d"),
    ("warmup_raises", 1, "fake warm-up failed: RuntimeError: warm-up broke"),
])
def test_broken_fast_path_warns_once_and_matches_an_eager_run(tiles, tmp_path, monkeypatch, capsys, how, bad_call, reason):
    """A fast path that raises or disagrees: one warning with the reason, recorded, and weights bit-identical to eager."""
    p = tiny_params(iterations=8, log_every=4)
    ref = _eager_reference(tiles, tmp_path, p)
    made = _inject(monkeypatch, how=how, bad_call=bad_call)
    model, ck, live = run_dirs(tmp_path, "fast")
    capsys.readouterr()
    card = train(p, tiles, model, ck, live)
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "fast path" in ln]
    assert len(warnings) == 1 and reason in warnings[0] and "no step lost" in warnings[0], warnings
    assert card["fast_path"] == f"eager (fallback: {warnings[0].split('(no step lost): ')[1]})" and card["step"] == 8
    assert json.loads((live / "metrics.json").read_text())["train"]["warn_fast_path_fallback"] == 1.0
    assert made[0].closed
    assert_same_weights(model, ref)


def test_agreeing_fast_path_is_kept_and_matches_an_eager_run(tiles, tmp_path, monkeypatch, capsys):
    """A fast path that agrees is used after its checks, says so once, and records that in the card."""
    p = tiny_params(iterations=8)
    ref = _eager_reference(tiles, tmp_path, p)
    made = _inject(monkeypatch)
    model, ck, live = run_dirs(tmp_path, "fast")
    capsys.readouterr()
    card = train(p, tiles, model, ck, live)
    err = capsys.readouterr().err
    assert "warning" not in err and err.count("fast path fake: agreed with eager over 3 steps") == 1
    assert card["fast_path"] == "fake (checked against eager over 3 steps)"
    assert made[0].calls == 8 - made[0].warmup_steps and not made[0].closed  # every step after warm-up
    assert json.loads((live / "metrics.json").read_text())["train"]["warn_fast_path_fallback"] == 0.0
    assert_same_weights(model, ref)


@pytest.mark.parametrize("conditional", CONDITIONALS)
def test_agreeing_fast_path_with_a_conditional_model_matches_an_eager_run(rsscn7_files, tmp_path, monkeypatch, capsys,
                                                                          conditional):
    """The checked runner's snapshots and restores cover a conditional model (replay labels included): an agreeing
    fast path passes its check, and the weights equal an eager run's."""
    labelled = write_labelled_tiles(tmp_path / "prepared", rsscn7_files[::24][:12])
    p = tiny_params({"replay.enabled": True}, iterations=8, conditional=conditional)
    ref = _eager_reference(labelled, tmp_path, p)
    _inject(monkeypatch)
    model, ck, _ = run_dirs(tmp_path, "fast")
    capsys.readouterr()
    card = train(p, labelled, model, ck, None)
    assert "warning" not in capsys.readouterr().err and card["fast_path"] == "fake (checked against eager over 3 steps)"
    assert_same_weights(model, ref)


def test_resumed_run_warms_the_fast_path_up_again(tiles, tmp_path, monkeypatch):
    """After a resume the fast path is warmed up and checked again (a graph is never captured cold)."""
    made = _inject(monkeypatch, warmup_steps=2)
    model, ck, _ = run_dirs(tmp_path, "a")
    train(tiny_params(iterations=6), tiles, model, ck, None)
    train(tiny_params(iterations=10), tiles, model, ck, None)
    assert [f.calls for f in made] == [4, 2]  # 6 - 2 warm-ups, then 4 resumed steps - 2 warm-ups


@pytest.mark.parametrize("conditional", ["none", *CONDITIONALS])
def test_restore_is_in_place_and_exact_with_every_hack_on(conditional):
    """InPlaceState puts every part back exactly, writing into the same tensors (a captured graph reads them)."""
    tr = trainer(every_hack_on(conditional=conditional))
    tr.run_step()
    state = FP.checked_runner(tr).state
    snap = state.snapshot()
    addresses = _tensor_addresses(tr)
    for _ in range(2):
        tr.iteration()  # what a step changes (the host-side counters are advanced outside it)
    state.restore(snap)
    assert _tensor_addresses(tr) == addresses
    again = state.snapshot()
    assert set(snap["parts"]) == set(tr.parts) - {"data", "progress"} and set(snap["tensors"]) == {"step_t"}
    assert _equal(snap, again)


def test_no_fast_path_runs_plain_eager():
    """compile=none: the runner is eager and never snapshots."""
    runner = FP.checked_runner(trainer(tiny_params(compile="none")))
    assert runner.fast is None and runner.mode == "eager"


def test_compile_on_a_cpu_runs_eager_and_says_why(capsys):
    """compile=cuda_graph on a CPU: no fast path, and one line saying it needs CUDA."""
    runner = FP.checked_runner(trainer(tiny_params(compile="cuda_graph")))
    assert runner.fast is None and "compile=cuda_graph needs CUDA" in capsys.readouterr().err


def test_disagreement_tolerances():
    """Metrics within 1e-3 relative and weights within 1% of the step's update agree; more does not."""
    before = {"g": {"w": torch.zeros(100)}}
    eager = {"g": {"w": torch.full((100,), 0.01)}}
    close = {"g": {"w": torch.full((100,), 0.01 + 0.5e-4)}}
    far = {"g": {"w": torch.full((100,), 0.01 + 2e-4)}}
    assert FP.disagreement({"loss": 1.0005}, {"loss": 1.0}, close, eager, before) is None
    assert "loss 1.01 vs eager 1" in FP.disagreement({"loss": 1.01}, {"loss": 1.0}, close, eager, before)
    assert "g's weights are" in FP.disagreement({"loss": 1.0}, {"loss": 1.0}, far, eager, before)
    assert FP.disagreement({"loss": float("nan")}, {"loss": float("nan")}, eager, eager, before) is None
    assert "loss nan" in FP.disagreement({"loss": float("nan")}, {"loss": 1.0}, eager, eager, before)


def _tensor_addresses(tr) -> dict[str, list[int]]:
    out = {}
    for name, part in tr.parts.items():
        if isinstance(part, torch.optim.Optimizer):
            out[name] = [t.data_ptr() for s in part.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        elif isinstance(part, torch.nn.Module):
            out[name] = [t.data_ptr() for t in part.state_dict().values()]
        elif name != "rng":  # the RNG's state_dict is a copy by nature
            out[name] = [t.data_ptr() for t in _leaves(part.state_dict())]
    out["step_t"] = [tr.progress.step_t.data_ptr()]
    return out


def _leaves(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _leaves(v)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_disagreement_allows_one_flipped_tile_in_d_accuracy():
    """D's accuracies agree within ACCURACY_ATOL absolute (one logit flipping across 0), not beyond."""
    nets = {"g": {"w": torch.zeros(3)}}
    assert FP.disagreement({"d_acc_real": 0.5 + 1 / 64}, {"d_acc_real": 0.5}, nets, nets, nets) is None
    assert "d_acc_fake 0.75 vs eager 0.5" in FP.disagreement({"d_acc_fake": 0.75}, {"d_acc_fake": 0.5}, nets, nets, nets)
