"""Resumable checkpoints: every registered part of the trainer, saved and restored by name.

A checkpoint is one ``torch.save`` file (written to a temp file and renamed, so a kill never
leaves half of one), loaded with ``weights_only=True`` (tensors and plain data only, never
arbitrary pickled objects)::

    {"format": FORMAT, "resume_hash": ..., "data_hash": ..., "parts": {name: part.state_dict()},
     "train_seconds": float, "untimed_steps": int, "git": dict or None}

The last three (:class:`TrainedBy`) say how the weights got to this step: the training time
accumulated over every run that led to it, and the code that ran the last step, so that a
resumed run, even one with nothing left to train, writes model.json with the whole training
time and the code that trained the weights, not this process's.

The parts are whatever the trainer registered (:attr:`satgan.train.step.Trainer.parts`): this
module names none of them, so a new stateful hack is saved and restored as soon as it is
registered. A checkpoint that cannot be used (unreadable, another format, a missing or
mistyped field, a part missing or of the wrong shape) raises :class:`UnusableCheckpoint` with
a one-line reason; training then says so and starts fresh, it never crashes on one.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from satgan import names
from satgan.errors import TrainingError
from satgan.fsutil import atomic_path
from satgan.modelio import GIT_STATE_KEYS

CHECKPOINT_FILE = names.CHECKPOINT
# /2: one entry per registered part under "parts"; /3: train_seconds, untimed_steps and git (TrainedBy)
FORMAT = "satgan-train-checkpoint/3"
# Still resumed: a /2 checkpoint is read as steps of unknown time and code (TrainedBy.untimed).
OLD_FORMATS = ("satgan-train-checkpoint/2",)
PROGRESS_PART = "progress"  # the part holding {"step": int}


class Stateful(Protocol):
    """Anything whose state a resumed run needs: nets, optimizers, stateful hacks, counters, RNG."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class UnusableCheckpoint(Exception):
    """A checkpoint that cannot be resumed from; the message is the one-line reason."""


@dataclass(frozen=True)
class TrainedBy:
    """How a checkpoint's steps were trained, over every run that led to them.

    ``seconds``: the training time of the steps after the first ``untimed_steps`` (each run's
    time from its first step to its last checkpoint: a killed run's steps after that are trained
    again, and counted, by the next). ``untimed_steps``: the first steps, trained before
    checkpoints recorded their time (a /2 checkpoint resumed); their time is unknown, never 0.
    ``git``: :func:`satgan.modelio.git_state` of the code that ran the last step; None outside
    git or when not recorded (a /2 checkpoint).
    """

    seconds: float
    untimed_steps: int
    git: dict[str, Any] | None

    @classmethod
    def untimed(cls, step: int) -> TrainedBy:
        """A /2 checkpoint at ``step``: all its steps of unknown time, trained by unknown code."""
        return cls(seconds=0.0, untimed_steps=step, git=None)


@dataclass(frozen=True)
class Checkpoint:
    """A read and validated checkpoint file (the parts are checked against the trainer by :func:`restore`)."""

    resume_hash: str
    data_hash: str
    step: int
    parts: dict[str, Any]
    trained_by: TrainedBy


def _cpu(obj: Any) -> Any:
    """``obj`` with every tensor detached and copied to the CPU (dicts, lists and tuples walked)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_cpu(v) for v in obj)
    return obj


def checkpoint_state(parts: dict[str, Stateful], resume_hash: str, data_hash: str, trained_by: TrainedBy) -> dict[str, Any]:
    """Everything a resumed run needs, as plain data and CPU tensors."""
    return {
        "format": FORMAT,
        "resume_hash": resume_hash,
        "data_hash": data_hash,
        "parts": {name: _cpu(part.state_dict()) for name, part in parts.items()},
        "train_seconds": float(trained_by.seconds),
        "untimed_steps": int(trained_by.untimed_steps),
        "git": trained_by.git,
    }


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then an atomic rename: a kill never leaves half a checkpoint.

    The file is written through a Python file object, fsync'd before the rename, so a full disk
    surfaces as ``OSError`` (ENOSPC) (torch.save to a path turns it into an opaque RuntimeError from
    its C++ writer); it becomes one :class:`TrainingError` line, the temp file is removed and the
    previous checkpoint stays whole.
    """
    try:
        with atomic_path(path, suffix=".pt") as tmp:
            with open(tmp, "wb") as fh:
                torch.save(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
    except OSError as exc:
        raise TrainingError(f"{path}: cannot write the checkpoint ({exc.strerror or exc}); "
                            "the previous checkpoint is kept: free space and rerun to resume from it") from None


def first_non_finite(obj: Any, where: str = "") -> str | None:
    """The dotted name of the first floating tensor in ``obj`` (dicts, lists, tuples walked) holding NaN or Inf, or None."""
    if isinstance(obj, torch.Tensor):
        return where if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = first_non_finite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path``, or None when there is none; :class:`UnusableCheckpoint` when it cannot be used."""
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, OSError) as exc:
        raise UnusableCheckpoint(f"unreadable checkpoint ({_one_line(exc)})") from None
    if not isinstance(ck, dict) or "format" not in ck:
        raise UnusableCheckpoint("not a satgan checkpoint")
    if ck["format"] != FORMAT and ck["format"] not in OLD_FORMATS:
        raise UnusableCheckpoint(f"checkpoint format {ck['format']!r}, this satgan writes {FORMAT!r}")
    for key, kind in (("resume_hash", str), ("data_hash", str), ("parts", dict)):
        if key not in ck:
            raise UnusableCheckpoint(f"checkpoint has no {key!r}")
        if not isinstance(ck[key], kind):
            raise UnusableCheckpoint(f"checkpoint {key!r} is a {type(ck[key]).__name__}, expected a {kind.__name__}")
    progress = ck["parts"][PROGRESS_PART] if PROGRESS_PART in ck["parts"] else None
    step = progress["step"] if isinstance(progress, dict) and "step" in progress else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise UnusableCheckpoint(f"checkpoint has no valid {PROGRESS_PART}.step (got {step!r})")
    # A diverged run's weights (training never checkpoints them, but a file can come from elsewhere)
    # would resume into NaN losses and end as the model: refuse the file instead.
    bad = first_non_finite(ck["parts"])
    if bad is not None:
        raise UnusableCheckpoint(f"checkpoint holds NaN or Inf values in {bad}; it is not resumed")
    # A /2 checkpoint predates the record: its steps' time and code are unknown, said so in model.json (never 0 s).
    trained_by = TrainedBy.untimed(step) if ck["format"] in OLD_FORMATS else _trained_by(ck, step)
    return Checkpoint(resume_hash=ck["resume_hash"], data_hash=ck["data_hash"], step=step, parts=ck["parts"],
                      trained_by=trained_by)


def _trained_by(ck: dict[str, Any], step: int) -> TrainedBy:
    """The checkpoint's :class:`TrainedBy` fields, validated; :class:`UnusableCheckpoint` names the first bad one."""
    for key in ("train_seconds", "untimed_steps", "git"):
        if key not in ck:
            raise UnusableCheckpoint(f"checkpoint has no {key!r}")
    seconds, untimed, git = ck["train_seconds"], ck["untimed_steps"], ck["git"]
    if not isinstance(seconds, float) or not (math.isfinite(seconds) and seconds >= 0):
        raise UnusableCheckpoint(f"checkpoint 'train_seconds' must be a finite float >= 0 (got {seconds!r})")
    if not isinstance(untimed, int) or isinstance(untimed, bool) or not 0 <= untimed <= step:
        raise UnusableCheckpoint(f"checkpoint 'untimed_steps' must be an int from 0 to the step {step} (got {untimed!r})")
    if git is not None and not (isinstance(git, dict) and set(git) == set(GIT_STATE_KEYS) and isinstance(git["rev"], str)):
        raise UnusableCheckpoint(f"checkpoint 'git' must be None or a dict with keys {list(GIT_STATE_KEYS)} (got {git!r})")
    return TrainedBy(seconds=seconds, untimed_steps=untimed, git=git)


def restore(parts: dict[str, Stateful], ck: Checkpoint) -> None:
    """Load every part from ``ck`` in registration order; :class:`UnusableCheckpoint` names the first part that does not fit.

    On that error some parts may already hold the checkpoint's state: the caller must rebuild
    the trainer before starting fresh.
    """
    missing = [name for name in parts if name not in ck.parts]
    if missing:
        raise UnusableCheckpoint(f"checkpoint has no {missing[0]!r} state")
    extra = [name for name in ck.parts if name not in parts]
    if extra:
        raise UnusableCheckpoint(f"checkpoint holds {extra[0]!r} state this run does not have")
    for name, part in parts.items():
        try:
            part.load_state_dict(ck.parts[name])
            if isinstance(part, torch.optim.Optimizer):
                _check_optimizer_shapes(part)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise UnusableCheckpoint(f"{name}: {_one_line(exc)}") from None


def _check_optimizer_shapes(opt: torch.optim.Optimizer) -> None:
    """``Optimizer.load_state_dict`` does not compare state shapes with the parameters; a mismatch would fail mid-step."""
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state[p].items() if p in opt.state else ():
                if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape != p.shape:
                    raise ValueError(f"state {key!r} has shape {list(value.shape)}, its parameter {list(p.shape)}")


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing key {exc}"
    return " ".join(str(exc).split()) or type(exc).__name__
