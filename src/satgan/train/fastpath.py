"""The fast path (one CUDA graph per step, or torch.compile), trusted only after it agrees with eager steps.

The fast path has never run on most users' GPUs before their first ``dvc repro``; if it
breaks there, they must still get a trained model. So :class:`CheckedRunner` runs each of
the first :data:`CHECK_STEPS` fast steps twice from the same state and RNG:

1. snapshot the trainer (:class:`InPlaceState`), run one *eager* step, snapshot its result;
2. restore the first snapshot in place and run the *fast* step;
3. compare: every metric the step returns (losses, D outputs, gradient norms) within
   ``LOSS_RTOL`` relative (+ ``LOSS_ATOL``), and for G and D the distance between the fast and
   the eager weights (parameters and BatchNorm buffers) at most ``PARAM_RTOL`` of the distance
   the eager step moved them (+ ``PARAM_ATOL`` of their norm). A correct graph replays the
   same kernels, so it agrees far inside these bounds; a stale input, a frozen random stream
   or a missing update moves the weights by a whole step and fails them.

A capture or compile error, or a disagreement, gives one warning naming the reason; the
trainer restores the eager step's result (so no step is lost and the run continues exactly as
an eager run would) and stays eager. :attr:`CheckedRunner.mode` records what ran, for the
model card (``fast_path``) and the ``warn_fast_path_fallback`` metric.

Restores are *in place* (``copy_`` into the live tensors, never new ones): a captured graph
keeps reading the addresses it was captured with. The data feed is not snapshotted: it is
advanced on the host before each iteration, never inside one.

The fast path is a small interface (:class:`FastPath`) so that tests can inject one that
raises or disagrees on a CPU: :func:`choose` picks the real one from the params.
:func:`checked_runner` wraps a trainer's iterations in the check; the loop builds it and hands
its ``step`` to :meth:`~satgan.train.step.Trainer.run_step`, so this module sits above
:mod:`satgan.train.step` (it imports the Trainer; the Trainer does not import it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch

from satgan.train.checkpoint import PROGRESS_PART, Stateful
from satgan.train.runtime import any_rank, say
from satgan.train.step import Metrics, Trainer

GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture (CUDA graphs need warmed-up allocations)
CHECK_STEPS = 3  # fast steps compared with eager: the capture itself, then replays (a frozen RNG shows from the 2nd)
LOSS_RTOL, LOSS_ATOL = 1e-3, 1e-5
# D's accuracies (satgan.train.step.d_accuracy) count logits on either side of 0: a logit within rounding
# of 0 flips one tile (1/batch), which is agreement, not a fault. Beyond this share the fast step is wrong.
ACCURACY_METRICS = ("d_acc_real", "d_acc_fake")
# An acgan D's class accuracies (satgan.losses.class_accuracy) are argmaxes: a near-tie flips one tile the same way.
CLASS_ACCURACY_METRICS = ("cls_acc_real", "cls_acc_fake")
ACCURACY_ATOL = 0.05
PARAM_RTOL, PARAM_ATOL = 1e-2, 1e-6
NET_PARTS = ("g", "d")


class FastPath(Protocol):
    """A faster way to run ``Trainer.iteration()``: same state changes, same metrics."""

    name: str
    warmup_steps: int  # real training steps run through :meth:`warmup` before the first :meth:`step`

    def warmup(self) -> Metrics:
        """One training step while the fast path gets ready (e.g. eager on a side stream)."""
        ...

    def step(self) -> Metrics:
        """One training step the fast way; the first call may capture or compile (and may raise)."""
        ...

    def close(self) -> None:
        """Release what the fast path holds (a captured graph's memory)."""
        ...


class CudaGraph:
    """The whole D+G iteration captured in one CUDA graph, replayed each step (randomness included)."""

    name = "cuda_graph"
    warmup_steps = GRAPH_WARMUP_STEPS

    def __init__(self, trainer: Trainer) -> None:
        self.tr = trainer
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: Metrics | None = None

    def warmup(self) -> Metrics:
        dev = self.tr.device
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            out = self.tr.iteration()
        torch.cuda.current_stream(dev).wait_stream(side)
        return out

    def step(self) -> Metrics:
        if self.graph is None:
            graph = torch.cuda.CUDAGraph()
            # gradients are allocated inside the graph's memory pool, so that replays reuse them
            self.tr.opt_g.zero_grad(set_to_none=True)
            self.tr.opt_d.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                out = self.tr.iteration()
            self.graph, self.out = graph, out  # capture records only; the replay below runs this step
        self.graph.replay()
        assert self.out is not None
        return self.out

    def close(self) -> None:
        self.graph, self.out = None, None


class TorchCompile:
    """G and D (and D as G's step sees it) compiled with ``torch.compile``; the iteration itself stays Python."""

    name = "torch_compile"
    warmup_steps = 0

    def __init__(self, trainer: Trainer) -> None:
        self.tr = trainer
        self.modules = {k: torch.compile(getattr(trainer, k)) for k in ("g_run", "d_run", "d_fwd")}

    def warmup(self) -> Metrics:
        return self.tr.iteration()

    def step(self) -> Metrics:
        eager = {k: getattr(self.tr, k) for k in self.modules}
        for k, m in self.modules.items():
            setattr(self.tr, k, m)
        try:
            return self.tr.iteration()
        finally:
            for k, m in eager.items():
                setattr(self.tr, k, m)

    def close(self) -> None:
        self.modules = {}


def choose(trainer: Trainer) -> tuple[FastPath | None, str | None]:
    """The fast path ``train.compile`` asks for, or (None, why not) when it cannot be used here."""
    p, cuda = trainer.p, trainer.device.type == "cuda"
    if p.compile == "none":
        return None, None
    if not cuda:
        return None, f"compile={p.compile} needs CUDA; running eager on {trainer.device}"
    if p.compile == "torch_compile":
        return TorchCompile(trainer), None
    if not trainer.graph_mode:
        return None, "compile=cuda_graph is not used with DDP, the moderated schedule or lazy R1 (host decisions); running eager"
    return CudaGraph(trainer), None


def checked_runner(trainer: Trainer) -> CheckedRunner:
    """The runner of ``trainer``'s iterations: the fast path ``train.compile`` asks for (:func:`choose`),
    checked against eager steps, or plain eager; says why (rank 0) when the fast path cannot be used here.

    Its snapshots cover every checkpoint part but the data feed and the step count (the host
    advances those between iterations, in :meth:`~satgan.train.step.Trainer.run_step`), plus
    the device step counter that an iteration advances.
    """
    fast, why_not = choose(trainer)
    if why_not is not None and trainer.dist.main:
        say(why_not)
    state = InPlaceState(trainer.parts, host_parts=("data", PROGRESS_PART), tensors={"step_t": trainer.progress.step_t})
    device, dist = trainer.device, trainer.dist
    return CheckedRunner(trainer.iteration, fast, state, any_rank=lambda flag: any_rank(flag, device, dist),
                         main=dist.main)


def _clone(obj: Any) -> Any:
    """``obj`` with every tensor detached and copied (same device); dicts, lists and tuples walked."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_clone(v) for v in obj)
    return obj


@torch.no_grad()
def _restore_optimizer(opt: torch.optim.Optimizer, snap: dict[str, Any]) -> None:
    """``opt``'s per-parameter state set to ``snap`` by copying into its tensors (``load_state_dict`` makes new ones)."""
    params = [q for group in opt.param_groups for q in group["params"]]  # state_dict's index order
    for i, q in enumerate(params):
        saved = snap["state"].get(i)
        if saved is None:
            opt.state.pop(q, None)  # the snapshot predates this parameter's first step
            continue
        live = opt.state.setdefault(q, {})
        for key, value in saved.items():
            if isinstance(value, torch.Tensor) and isinstance(live.get(key), torch.Tensor) and live[key].shape == value.shape:
                live[key].copy_(value)
            else:
                live[key] = _clone(value)
    for group, saved_group in zip(opt.param_groups, snap["param_groups"]):
        for key, value in saved_group.items():
            if key == "params":
                continue
            if isinstance(group.get(key), torch.Tensor) and isinstance(value, torch.Tensor):
                group[key].copy_(value)  # a tensor hyperparameter (capturable lr) may be read by a graph
            else:
                group[key] = value


class InPlaceState:
    """Snapshots of what one iteration changes (on the device), restored into the live tensors.

    ``parts``: the trainer's checkpoint parts, minus ``host_parts`` (counters the trainer
    advances on the host between iterations, e.g. the data feed and the step count; their
    state is the same before and after an iteration). ``tensors``: device state an iteration
    changes that no part's state_dict holds mid-iteration (the device step counter).
    """

    def __init__(self, parts: dict[str, Stateful], host_parts: tuple[str, ...] = (),
                 tensors: dict[str, torch.Tensor] | None = None) -> None:
        self.parts = {name: part for name, part in parts.items() if name not in host_parts}
        self.tensors = dict(tensors or {})

    def snapshot(self) -> dict[str, Any]:
        return {"parts": {name: _clone(part.state_dict()) for name, part in self.parts.items()},
                "tensors": {name: t.detach().clone() for name, t in self.tensors.items()}}

    @torch.no_grad()
    def restore(self, snap: dict[str, Any]) -> None:
        """Everything back to ``snap``; modules and the stateful hacks already load by copying into their tensors."""
        for name, part in self.parts.items():
            if isinstance(part, torch.optim.Optimizer):
                _restore_optimizer(part, snap["parts"][name])
            else:
                part.load_state_dict(_clone(snap["parts"][name]))
        for name, t in self.tensors.items():
            t.copy_(snap["tensors"][name])

    def nets(self, snap: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
        """G's and D's state dicts in ``snap``."""
        return {net: snap["parts"][net] for net in NET_PARTS}


def _floats(out: Metrics) -> dict[str, float]:
    return {k: float(v) for k, v in out.items()}


def _net_vector_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """L2 distance between two state dicts over their floating-point tensors (float64)."""
    total = 0.0
    for k, t in a.items():
        if t.is_floating_point():
            total += float((t.double() - b[k].double()).pow(2).sum())
    return math.sqrt(total)


def _net_norm(a: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in a.values() if t.is_floating_point()))


def disagreement(fast: dict[str, float], eager: dict[str, float], nets_fast: dict[str, dict[str, torch.Tensor]],
                 nets_eager: dict[str, dict[str, torch.Tensor]], nets_before: dict[str, dict[str, torch.Tensor]]) -> str | None:
    """Why a fast step does not match the eager step from the same state, or None when it does (tolerances above)."""
    for k, e in eager.items():
        if k not in fast:
            return f"the fast step returned no {k!r}"
        f = fast[k]
        if not (math.isfinite(e) or math.isfinite(f)):
            continue  # both diverged: the loop reports that, not a fast-path fault
        tol = ACCURACY_ATOL if k in ACCURACY_METRICS + CLASS_ACCURACY_METRICS else LOSS_ATOL + LOSS_RTOL * abs(e)
        if not abs(f - e) <= tol:
            return f"{k} {f:.6g} vs eager {e:.6g}"
    for net, eager_state in nets_eager.items():
        off = _net_vector_distance(nets_fast[net], eager_state)
        moved = _net_vector_distance(eager_state, nets_before[net])
        if not off <= PARAM_RTOL * moved + PARAM_ATOL * _net_norm(eager_state):
            return f"{net}'s weights are {off:.3g} from eager's (the eager step moved them {moved:.3g})"
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class CheckedRunner:
    """Runs iterations through ``fast`` once it has agreed with eager steps; eagerly otherwise (see the module doc).

    ``eager`` runs one iteration; ``state`` snapshots and restores the trainer; ``any_rank`` turns
    this process's "disagrees" into every rank's (DDP ranks must all take the same path).
    """

    def __init__(self, eager: Callable[[], Metrics], fast: FastPath | None, state: InPlaceState,
                 any_rank: Callable[[bool], bool] = lambda flag: flag, main: bool = True,
                 checks: int = CHECK_STEPS) -> None:
        self.eager, self.fast, self.state, self.any_rank, self.main = eager, fast, state, any_rank, main
        self.checks = checks
        self.warmups_done = 0
        self.checked = 0
        self.fallback: str | None = None  # the reason, once the fast path was given up

    @property
    def mode(self) -> str:
        """What runs: ``eager``, ``<fast> (checked over N steps)``, ``<fast> (checking)`` or ``eager (fallback: <reason>)``."""
        if self.fallback is not None:
            return f"eager (fallback: {self.fallback})"
        if self.fast is None:
            return "eager"
        if self.checked >= self.checks:
            return f"{self.fast.name} (checked against eager over {self.checks} steps)"
        return f"{self.fast.name} (checking against eager)"

    def step(self) -> Metrics:
        """One training iteration."""
        if self.fast is None:
            return self.eager()
        if self.warmups_done < self.fast.warmup_steps:
            self.warmups_done += 1
            return self._guarded(self.fast.warmup, "warm-up")
        if self.checked < self.checks:
            return self._checked_step()
        return self.fast.step()

    def _guarded(self, run: Callable[[], Metrics], what: str) -> Metrics:
        """``run()``; if it raises, restore the state from before it and run the step eagerly instead."""
        before = self.state.snapshot()
        error: str | None = None
        try:
            out = run()
        except Exception as exc:  # any fast-path failure: recorded and warned about, training goes on eagerly
            error = f"{self._name} {what} failed: {_one_line(exc)}"
        if self.any_rank(error is not None):
            self.state.restore(before)
            self._give_up(error or "another rank's fast path failed")
            return self.eager()
        return out

    def _checked_step(self) -> Metrics:
        before = self.state.snapshot()
        out_e = self.eager()
        eager_vals = _floats(out_e)
        after_eager = self.state.snapshot()
        self.state.restore(before)
        reason: str | None = None
        out_f: Metrics = {}
        try:
            out_f = self.fast.step()  # type: ignore[union-attr]
            fast_vals = _floats(out_f)
        except Exception as exc:  # a capture/compile error: recorded and warned about, training goes on eagerly
            reason = f"{self._name} failed: {_one_line(exc)}"
        else:
            live = {net: self.state.parts[net].state_dict() for net in NET_PARTS}
            reason = disagreement(fast_vals, eager_vals, live, self.state.nets(after_eager), self.state.nets(before))
            if reason is not None:
                reason = f"{self._name} disagrees with eager at its check step {self.checked + 1}: {reason}"
        if self.any_rank(reason is not None):
            self.state.restore(after_eager)  # the eager step's result: no step lost
            self._give_up(reason or "another rank's fast step disagreed with eager")
            return out_e
        self.checked += 1
        if self.checked == self.checks and self.main:
            say(f"fast path {self._name}: agreed with eager over {self.checks} steps (metrics within {LOSS_RTOL:g} "
                f"relative, weights within {PARAM_RTOL:.0%} of a step's update); using it")
        return out_f

    @property
    def _name(self) -> str:
        return self.fast.name if self.fast is not None else "eager"

    def _give_up(self, reason: str) -> None:
        if self.main:
            say(f"warning: fast path given up, continuing eagerly from the same state (no step lost): {reason}")
        self.fallback = reason
        if self.fast is not None:
            self.fast.close()
        self.fast = None
