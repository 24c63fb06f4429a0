"""The GPU path for real (marker ``cuda``): CUDA graph vs eager, bf16 + fused Adam, streaming, resume, hacks in the graph.

Without CUDA every test here is *skipped*, with the reason in pytest's summary (``-ra``):
never passed. ``make gpu-check`` (bench/gpu_check.py) runs them on a GPU machine and fails if
any is skipped there, so none can pass silently.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from satgan.model import sample_latent
from satgan.train import Dist, Trainer, TrainParams, model_config, train
from satgan.train.fastpath import CHECK_STEPS, CheckedRunner, checked_runner
from satgan.train.registry import HACKS
from satgan.train.runtime import determinism
from train_helpers import (
    ARRAY,
    CONDITIONALS,
    LABELS,
    assert_same_weights,
    every_hack_on,
    run_dirs,
    tiny_params,
    weights,
    write_labelled_tiles,
    write_tiles,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: run `make gpu-check` on a GPU machine"),
]

CUDA = torch.device("cuda", 0)
CHECKED = f"cuda_graph (checked against eager over {CHECK_STEPS} steps)"


@pytest.fixture(scope="module")
def tiles(tmp_path_factory, rsscn7_files) -> Path:
    """24 real RSSCN7 tiles at 32x32."""
    return write_tiles(tmp_path_factory.mktemp("prepared"), rsscn7_files[::12][:24])


def cuda_params(hacks: dict[str, Any] | None = None, **top: Any) -> TrainParams:
    """Tiny params on the GPU, wide enough (ngf = ndf = 16) for the GPU kernels that matter."""
    return tiny_params(hacks, **{"device": "cuda", "ngf": 16, "ndf": 16, "batch_size": 16, **top})


def cuda_trainer(p: TrainParams) -> Trainer:
    n_classes = int(LABELS.max()) + 1 if p.conditional != "none" else 0
    return Trainer(p, model_config(p, ARRAY.shape[2], ARRAY.shape[1], n_classes), ARRAY, CUDA, Dist(), LABELS)


def run_steps(p: TrainParams, steps: int) -> tuple[Trainer, CheckedRunner]:
    """A fresh CUDA trainer after ``steps`` iterations through its checked fast path, as the stage runs them
    (deterministic mode as ``p`` says), and that runner."""
    with determinism(p.deterministic, CUDA):
        tr = cuda_trainer(p)
        runner = checked_runner(tr)
        for _ in range(steps):
            out = tr.run_step(runner.step)
        assert all(math.isfinite(float(v)) for v in out.values())
        torch.cuda.synchronize()
    return tr, runner


def relative_gap(a: torch.nn.Module, b: torch.nn.Module, start: dict[str, torch.Tensor]) -> float:
    """||a - b|| over the floating state, relative to how far ``b`` moved from ``start``."""
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k, v in sb.items() if v.is_floating_point()]
    gap = math.sqrt(sum(float((sa[k].double() - sb[k].double()).pow(2).sum()) for k in keys))
    moved = math.sqrt(sum(float((sb[k].double() - start[k].double().to(sb[k].device)).pow(2).sum()) for k in keys))
    return gap / moved


def test_cuda_graph_agrees_with_eager_over_several_steps():
    """compile=cuda_graph passes its own check and, 10 steps on, its G and D are within 1% of an eager run's movement."""
    start = {k: v.clone() for k, v in cuda_trainer(cuda_params(compile="none")).g.state_dict().items()}
    graph, runner = run_steps(cuda_params(compile="cuda_graph"), 10)
    eager, _ = run_steps(cuda_params(compile="none"), 10)
    assert runner.mode == CHECKED and runner.fallback is None
    assert relative_gap(graph.g, eager.g, start) < 0.01


def test_bf16_autocast_and_fused_adam():
    """On CUDA with amp: G runs in bf16 under autocast, both Adams are fused, and the steps stay finite."""
    tr, _ = run_steps(cuda_params(amp=True), 4)
    assert tr.opt_g.param_groups[0]["fused"] and tr.opt_d.param_groups[0]["fused"]
    with torch.no_grad(), tr.amp():
        assert tr.g(sample_latent(tr.cfg, 2, device=CUDA)).dtype == torch.bfloat16


def test_streaming_path_with_a_tiny_data_budget(tiles, tmp_path):
    """data_budget_mb=0 streams from the memmap through pinned memory into the graph; two runs give the same weights."""
    p = cuda_params(data_budget_mb=0, iterations=8)
    with determinism(True, CUDA):
        tr = cuda_trainer(p)
        tr.feed.start()
        try:
            assert not tr.resident and tr.feed.buffers[0].device.type == "cuda"
            assert tr.feed.stream is not None and tr.feed.stream._queue.get()[0].is_pinned()
        finally:
            tr.feed.close()
    dirs = [run_dirs(tmp_path, n) for n in ("a", "b")]
    for model, ck, _ in dirs:
        card = train(p, tiles, model, ck, None)
        assert card["fast_path"] == CHECKED and card["device"] == "cuda"
    assert_same_weights(dirs[0][0], dirs[1][0])


def test_checkpoint_resume_on_cuda_is_bit_identical_in_eager_mode(tiles, tmp_path):
    """Deterministic eager on one GPU: 4 then 8 resumed equals 8 in one go, bit for bit (what PyTorch guarantees)."""
    model, ck, _ = run_dirs(tmp_path, "a")
    train(cuda_params(compile="none", iterations=4), tiles, model, ck, None)
    card = train(cuda_params(compile="none", iterations=8), tiles, model, ck, None)
    assert card["resumed"]
    ref, ref_ck, _ = run_dirs(tmp_path, "ref")
    train(cuda_params(compile="none", iterations=8), tiles, ref, ref_ck, None)
    assert_same_weights(model, ref)


def test_checkpoint_resume_on_cuda_with_the_graph(tiles, tmp_path):
    """With the CUDA graph (recaptured after the resume): 6 then 12 resumed ends within 1e-5 of 12 in one go."""
    model, ck, _ = run_dirs(tmp_path, "a")
    train(cuda_params(iterations=6), tiles, model, ck, None)
    card = train(cuda_params(iterations=12), tiles, model, ck, None)
    assert card["resumed"] and card["fast_path"] == CHECKED
    ref, ref_ck, _ = run_dirs(tmp_path, "ref")
    train(cuda_params(iterations=12), tiles, ref, ref_ck, None)
    got, want = weights(model), weights(ref)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.allclose(got[k].float(), want[k].float(), rtol=0, atol=1e-5), k


DEFAULT_ON = [h for h in HACKS if h.default_on]


@pytest.mark.parametrize("hack", DEFAULT_ON, ids=[h.name for h in DEFAULT_ON])
def test_each_default_on_hack_alone_inside_the_graph(hack):
    """Each default-on hack, alone, is captured in the graph and agrees with eager steps (no fallback)."""
    overrides: dict[str, Any] = {h.params_key.removeprefix("train.hacks."): h is hack for h in HACKS}
    _, runner = run_steps(cuda_params(overrides), 8)
    assert runner.mode == CHECKED, runner.mode


def test_all_default_hacks_inside_the_graph():
    """params.yaml's hacks together, captured in one graph: the check passes and the graph is replayed."""
    _, runner = run_steps(cuda_params(), 10)
    assert runner.mode == CHECKED and runner.fast is not None and runner.fast.graph is not None


def test_deterministic_mode_on_cuda_sets_cudnn_and_cublas():
    """train.deterministic on CUDA: cuDNN deterministic without autotuning, CUBLAS_WORKSPACE_CONFIG set; restored after."""
    import os

    with determinism(True, CUDA) as mode:
        assert mode == "deterministic" and torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    with determinism(False, CUDA):
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()


def test_two_deterministic_graph_runs_are_identical(tiles, tmp_path):
    """Deterministic mode, CUDA graph, one GPU: two runs give bit-identical weights."""
    dirs = [run_dirs(tmp_path, n) for n in ("a", "b")]
    for model, ck, _ in dirs:
        train(cuda_params(iterations=8), tiles, model, ck, None)
    assert_same_weights(dirs[0][0], dirs[1][0])


def test_d_view_copy_is_captured_in_the_graph_and_follows_each_replay():
    """d_view under the CUDA graph: the copy runs in every replay (buffers change step to step) and the check passes."""
    tr, runner = run_steps(cuda_params(d_view=True), 8)
    assert runner.mode == CHECKED and tr.view is not None and tr.view.always
    before = tr.view.real.clone()
    tr.run_step(runner.step)
    torch.cuda.synchronize()
    assert not torch.equal(tr.view.real, before) and tr.view.grid().ndim == 3


def test_d_view_leaves_graph_training_bit_identical(tiles, tmp_path):
    """Deterministic CUDA graph: a run dumping D's view every step trains the same weights as one without it."""
    dirs = [run_dirs(tmp_path, n) for n in ("on", "off")]
    for (model, ck, live), on in zip(dirs, (True, False)):
        card = train(cuda_params(d_view=on, sample_every=1, iterations=8), tiles, model, ck, live)
        assert card["fast_path"] == CHECKED
    assert_same_weights(dirs[0][0], dirs[1][0])


def test_g_layer_noise_and_avg_pool_d_inside_the_graph():
    """G's decayed layer noise (std set on the device from the step) and average-pool D are captured and agree with eager."""
    tr, runner = run_steps(cuda_params({"g_layer_noise.enabled": True, "g_layer_noise.decay_iters": 20, "avg_pool_d": True}), 10)
    assert runner.mode == CHECKED
    assert all(m.std.item() == pytest.approx(0.1 * (1 - 9 / 20)) for m in tr.g_noise)


@pytest.mark.parametrize("conditional", CONDITIONALS)
def test_conditional_step_inside_the_graph(conditional):
    """A conditional model with replay (labels in the buffer) and checkpoint swap: labels drawn inside the graph, the
    class embedding and heads captured, the check passes (acgan's class losses deterministic on CUDA)."""
    _, runner = run_steps(cuda_params({"replay.enabled": True, "checkpoint_swap.enabled": True, "checkpoint_swap.every": 2,
                                       "checkpoint_swap.length": 1}, conditional=conditional), 10)
    assert runner.mode == CHECKED, runner.mode


@pytest.mark.parametrize("conditional", CONDITIONALS)
def test_conditional_streaming_and_resume_in_the_graph(rsscn7_files, tmp_path, conditional):
    """Labelled batches streamed into the graph's buffers; 4 then 8 resumed ends within 1e-5 of 8 in one go."""
    labelled = write_labelled_tiles(tmp_path / "prepared", rsscn7_files[::12][:24])
    p = {"conditional": conditional, "data_budget_mb": 0}
    model, ck, _ = run_dirs(tmp_path, "a")
    train(cuda_params(iterations=4, **p), labelled, model, ck, None)
    card = train(cuda_params(iterations=8, **p), labelled, model, ck, None)
    assert card["resumed"] and card["fast_path"] == CHECKED
    ref, ref_ck, _ = run_dirs(tmp_path, "ref")
    train(cuda_params(iterations=8, **p), labelled, ref, ref_ck, None)
    got, want = weights(model), weights(ref)
    for k in want:
        assert torch.allclose(got[k].float(), want[k].float(), rtol=0, atol=1e-5), k


@pytest.mark.parametrize("conditional", CONDITIONALS)
def test_conditional_with_every_hack_on_cuda(conditional):
    """Every hack with a conditional model on CUDA in deterministic mode: no op without a deterministic kernel
    (the class embedding's backward, acgan's class cross-entropy), finite steps."""
    run_steps(every_hack_on(conditional=conditional, device="cuda", ngf=16, ndf=16, batch_size=16), 3)
