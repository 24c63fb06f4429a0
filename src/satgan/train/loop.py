"""The train stage: set up, resume or start fresh, build the fast-path runner, run the iterations, log, checkpoint,
write the model.

``train(params, data_dir, out_dir, checkpoints_dir, live_dir)`` is the whole stage. It is
importable without DVC: only the logging path imports dvclive (and only when ``live_dir``
is given).

Reproducibility: one seed drives Python, numpy and torch; on a CPU two runs with the same
params give bit-identical weights, and a run killed at any moment and rerun resumes from its
last checkpoint to the same final weights. Checkpoints hold every registered part of the
trainer (:mod:`satgan.train.checkpoint`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from satgan import names
from satgan.arrays import class_names, open_labels, open_prepared
from satgan.errors import DataError, TrainingError
from satgan.fsutil import sha256_file
from satgan.modelio import git_state, save_model
from satgan.openmp import cpu_threads, wait_policy
from satgan.train import fastpath as FP
from satgan.train import hacks as H
from satgan.train.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    TrainedBy,
    UnusableCheckpoint,
    checkpoint_state,
    read_checkpoint,
    restore,
    save_checkpoint,
)
from satgan.train.params import TrainParams
from satgan.train.runtime import (
    Dist,
    all_ranks_agree,
    determinism,
    die_with_launcher,
    dist_from_env,
    local_world_size,
    pick_device,
    process_group,
    say,
)
from satgan.train.step import Trainer, model_config


class Logger:
    """dvclive on rank 0 (imported only here), a no-op elsewhere or without ``live_dir``."""

    def __init__(self, live_dir: Path | None, resume: bool, enabled: bool) -> None:
        self.live = None
        if live_dir is not None and enabled:
            from dvclive import Live

            if resume:
                _drop_unreadable_summary(live_dir / LIVE_SUMMARY)

            # dvcyaml=False: plots are declared in the project's dvc.yaml, never rewritten by dvclive
            self.live = Live(dir=str(live_dir), resume=resume, dvcyaml=False, save_dvc_exp=False)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for k, v in values.items():
            self.live.log_metric(f"train/{k}", v)
        self.live.make_summary()

    def image(self, series: str, step: int, grid: np.ndarray) -> None:
        """``grid`` as ``plots/images/<series>/<step>.png`` (``series``: a ``names.LIVE_*`` constant)."""
        if self.live is not None:
            self.live.step = step
            self.live.log_image(f"{series}/{step}.png", grid)  # a folder of steps: dvc plots shows a slider

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


LIVE_SUMMARY = "metrics.json"  # dvclive's summary file (Live.metrics_file), read back on resume


def _drop_unreadable_summary(path: Path) -> None:
    """Delete dvclive's summary when it is not valid JSON, saying so, so that resuming does not crash on it.

    dvclive rewrites it in place at every log point, so a ``kill -9`` in the middle leaves it
    empty or cut short, and ``Live(resume=True)`` then fails with a JSON traceback. It is only
    the latest value of each metric: the next log point writes it again, and the series under
    ``plots/`` are untouched.
    """
    if not path.is_file():
        return
    try:
        json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        say(f"{path}: unreadable (a write was interrupted); dropping it, the next log point rewrites it")
        path.unlink()


def check_finite(out: dict[str, torch.Tensor], step: int, ck_dir: Path) -> dict[str, float]:
    """The step's metrics as floats; a NaN/inf loss or norm stops training with a clear error."""
    vals = {k: float(v) for k, v in out.items()}
    bad = [k for k, v in vals.items() if not math.isfinite(v)]
    if bad:
        raise TrainingError(
            f"training diverged at step {step}: {', '.join(f'{k}={vals[k]}' for k in bad)} "
            f"(try lower learning rates or other hacks; the last good checkpoint is in {ck_dir})"
        )
    return vals


def train(
    p: TrainParams,
    data_dir: str | Path,
    out_dir: str | Path,
    checkpoints_dir: str | Path,
    live_dir: str | Path | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Train (or resume) on ``data_dir/tiles.npy`` and write the model to ``out_dir``; returns model.json.

    ``train.conditional`` other than ``none`` also reads ``data_dir/labels.npy`` and the classes
    named by the sidecar (:func:`read_labels`), and model.json records them.

    ``max_seconds`` (a library argument for benchmarks at equal compute, not a param): stop
    after the step that passes this many seconds of training (setup, resume and data loading
    not counted), then checkpoint and write the model as usual; the card's ``step`` says where
    it stopped and ``max_seconds`` records the budget. A later call without it resumes from
    that checkpoint. None trains all ``p.iterations``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the same call trains with DistributedDataParallel:
    NCCL on GPUs, gloo on CPUs; ``batch_size`` is per process; rank 0 logs and writes files.
    """
    if max_seconds is not None and not (max_seconds >= 0 and math.isfinite(max_seconds)):
        raise ValueError(f"max_seconds must be a finite number >= 0 or None, got {max_seconds!r}")
    dist = dist_from_env()
    if dist.enabled:
        die_with_launcher()
    device = pick_device(p.device, dist.local_rank)
    # determinism first: on CUDA it sets CUBLAS_WORKSPACE_CONFIG, which must precede any cuBLAS call
    with determinism(p.deterministic, device) as mode, process_group(device, dist):
        return _train(p, Path(data_dir), Path(out_dir), Path(checkpoints_dir), Path(live_dir) if live_dir else None,
                      device, dist, max_seconds, mode)


def _resume_refusal(ck: Checkpoint, resume_hash: str, data_hash: str, iterations: int) -> str | None:
    """Why ``ck`` must not be resumed from, or None when it can be."""
    if ck.resume_hash != resume_hash:
        return f"train params changed since step {ck.step} (keys other than iterations/*_every)"
    if ck.data_hash != data_hash:
        return f"training data changed since step {ck.step}"
    if ck.step > iterations:
        return f"checkpoint step {ck.step} is past train.iterations={iterations}"
    return None


def read_labels(data_dir: Path, meta: dict[str, Any], n_tiles: int, conditional: str) -> tuple[np.ndarray, list[str]]:
    """The training tiles' class indices (``labels.npy``) and class names (the sidecar's ``classes``) for conditional training.

    Unlabelled prepared data (no labels.npy) is one :class:`DataError` naming ``train.conditional``
    and the folder; labels that do not fit the tiles or the classes are one naming the file
    (:func:`satgan.arrays.open_labels`, as evaluate reads them).
    """
    path = data_dir / names.TRAIN_LABELS
    if not path.is_file():
        raise DataError(
            f"train.conditional is {conditional!r} but the prepared data in {data_dir} has no labels "
            f"({names.TRAIN_LABELS} not found): prepare labelled tiles (download.labels: folder or csv) "
            "or set train.conditional: none"
        )
    classes = class_names(meta["classes"]) if "classes" in meta else None
    if classes is None:
        raise DataError(f"{data_dir / names.TRAIN_TILES}: its sidecar names no classes (key 'classes': a list of "
                        f"distinct names) for {names.TRAIN_LABELS}; rerun prepare")
    return open_labels(path, n_tiles, len(classes), names.TRAIN_TILES), list(classes)


def _train(p: TrainParams, data_dir: Path, out_dir: Path, ck_dir: Path, live_dir: Path | None,
           device: torch.device, dist: Dist, max_seconds: float | None, mode: str) -> dict[str, Any]:
    tiles = data_dir / names.TRAIN_TILES
    array, meta = open_prepared(tiles)
    if len(array) < 2:
        raise DataError(f"{tiles}: need at least 2 tiles to train, found {len(array)}")
    torch.set_num_threads(cpu_threads(p.threads, local_world_size()))
    data_hash = sha256_file(tiles)
    labels: np.ndarray | None = None
    classes: list[str] = []
    resume_data_hash = data_hash  # what a checkpoint must have trained on: the tiles, and their labels when conditional
    if p.conditional != "none":
        labels, classes = read_labels(data_dir, meta, len(array), p.conditional)
        resume_data_hash = f"{data_hash}+labels:{sha256_file(data_dir / names.TRAIN_LABELS)}"
    resume_hash = p.resume_hash()
    cfg = model_config(p, int(meta["image_size"]), int(meta["channels"]), len(classes))
    ck_path = ck_dir / CHECKPOINT_FILE
    trainer, ck = _resume_or_start(lambda: Trainer(p, cfg, array, device, dist, labels), ck_path,
                                   resume_hash, resume_data_hash, p.iterations)
    resumed = ck is not None
    # The code this process runs, read before training (what runs is what was imported); rank 0 alone writes files.
    code = git_state() if dist.main else None
    # How the steps so far were trained: nothing yet, or the checkpoint's record (earlier runs' time and code).
    # Each checkpoint adds this run's time to it and model.json gets the last one saved, so a run that resumes at
    # the final step and trains nothing writes the time and code that trained the weights, not ~0 s and HEAD.
    earlier = ck.trained_by if ck is not None else TrainedBy(seconds=0.0, untimed_steps=0, git=code)
    trained_by = earlier
    trainer.seed_rank_streams()
    runner = FP.checked_runner(trainer)  # the fast path (compile), checked against eager steps; eager on a CPU
    conditioned = f", {cfg.conditional} on {cfg.n_classes} classes" if cfg.is_conditional else ""
    say(f"{cfg.image_size}x{cfg.image_size}x{cfg.channels}, {len(array)} tiles{conditioned}, device {device}"
        f"{f' x{dist.world} (DDP)' if dist.enabled else ''}, data {'resident' if trainer.resident else 'streamed'}, "
        f"step {runner.mode}, threads {torch.get_num_threads()}, {mode}; {wait_policy()}")

    logger = Logger(live_dir, resume=resumed, enabled=dist.main)
    trainer.feed.start()
    # One progress bar on rank 0 (stderr, like the other stages): iterations, ETA, and at every
    # metric read the losses and img/s smoothed over the last reads (one read swings with the load).
    bar = tqdm(total=p.iterations, initial=trainer.step, desc="train", unit="it", file=sys.stderr,
               disable=not dist.main, dynamic_ncols=True, mininterval=1.0)
    t_start = time.perf_counter()
    log_point = LogPoint(p, trainer, runner, logger, bar, dist.world, ck_dir, t_start)
    try:
        while trainer.step < p.iterations:
            started = trainer.step
            out = trainer.run_step(runner.step)
            step = trainer.step
            bar.update(1)
            if trainer.view is not None and trainer.view.due(started) and dist.main:
                # D's inputs of the iteration that started at `started` (step 0: the first batch D saw)
                logger.image(names.LIVE_D_VIEW, started, trainer.view.grid())
            out_of_time = max_seconds is not None and all_ranks_agree(
                time.perf_counter() - t_start >= max_seconds, device, dist)
            final = step == p.iterations or out_of_time
            if step % p.log_every == 0 or final:
                log_point(out, step)
            if step % p.sample_every == 0 or final:
                logger.image(names.LIVE_SAMPLES, step, trainer.sample_grid())
            if (step % p.checkpoint_every == 0 or final) and dist.main:
                check_finite(out, step, ck_dir)  # never checkpoint diverged weights
                # This run's time counts up to its last checkpoint: steps after it are lost to a kill and timed again.
                now = TrainedBy(seconds=earlier.seconds + time.perf_counter() - t_start,
                                untimed_steps=earlier.untimed_steps, git=code)
                save_checkpoint(ck_path, checkpoint_state(trainer.parts, resume_hash, resume_data_hash, now))
                trained_by = now
            if out_of_time:
                say(f"max_seconds={max_seconds} reached: stopping at step {step} of {p.iterations}")
                break
    finally:
        bar.close()
        trainer.feed.close()
        logger.close()

    card: dict[str, Any] = {}
    if dist.main:
        extra: dict[str, Any] = {"resumed": resumed, "world_size": dist.world, "device": str(device.type),
                                 "fast_path": runner.mode, "deterministic": p.deterministic}
        if max_seconds is not None:
            extra["max_seconds"] = max_seconds
        card = save_model(
            out_dir, trainer.g, trainer.d, cfg, generator_ema=trainer.ema.module if trainer.ema is not None else None,
            params_hash=p.resume_hash(), data_hash=data_hash, step=trainer.step, extra=extra,
            data_meta=meta, train_params=p, classes=classes,  # MODEL_CARD.md's provenance, recipe, compute
            # The final step is always checkpointed: this is that checkpoint's record, and a rerun that resumes
            # from it and trains nothing writes the same time and code. The git revision is the code that ran
            # the last step (its checkpoint's, when this run ran none); earlier runs may have run other code.
            wall_seconds=trained_by.seconds, untimed_steps=trained_by.untimed_steps, git=trained_by.git,
        )
        say(f"wrote {out_dir} at step {trainer.step}")
    return card


def _resume_or_start(new_trainer: Callable[[], Trainer], ck_path: Path, resume_hash: str, data_hash: str,
                     iterations: int) -> tuple[Trainer, Checkpoint | None]:
    """A trainer restored from the checkpoint at ``ck_path`` when it can be resumed, else a fresh one (saying why);
    and the checkpoint it was resumed from, or None.

    A missing, unreadable, mismatched (:func:`_resume_refusal`) or unloadable checkpoint means
    starting fresh. A restore that fails half-way may have loaded some parts, so the fresh
    trainer is then built anew.
    """
    trainer = new_trainer()
    try:
        ck = read_checkpoint(ck_path)
    except UnusableCheckpoint as exc:
        say(f"{ck_path}: {exc}; starting fresh")
        return trainer, None
    if ck is None:
        say("no checkpoint: starting fresh")
        return trainer, None
    refusal = _resume_refusal(ck, resume_hash, data_hash, iterations)
    if refusal is not None:
        say(f"{ck_path}: {refusal}: starting fresh")
        return trainer, None
    try:
        restore(trainer.parts, ck)
    except UnusableCheckpoint as exc:
        say(f"{ck_path}: {exc}; starting fresh")
        return new_trainer(), None  # the failed restore may have loaded some parts
    untimed = (f" (the first {ck.trained_by.untimed_steps} steps' training time is unknown: an older checkpoint "
               "did not record it)" if ck.trained_by.untimed_steps else "")
    say(f"resuming from {ck_path} at step {ck.step} of {iterations}{untimed}")
    return trainer, ck


class LogPoint:
    """The metric read every ``log_every`` steps (and at the last step): the one host sync of the loop.

    Checks the metrics are finite (else :class:`TrainingError`), adds throughput, learning
    rates, the fast-path fallback flag and the failure tracker's warnings (``failure_tracking``),
    logs them to dvclive and shows the losses and a smoothed img/s on the progress bar.
    """

    def __init__(self, p: TrainParams, trainer: Trainer, runner: FP.CheckedRunner, logger: Logger, bar: tqdm,
                 world: int, ck_dir: Path, t_start: float) -> None:
        self.p, self.trainer, self.runner, self.logger, self.bar = p, trainer, runner, logger, bar
        self.world, self.ck_dir = world, ck_dir
        ft = p.hacks.failure_tracking
        self.tracker = H.FailureTracker(ft.d_loss_floor, ft.patience, ft.grad_norm_limit) if ft.enabled else None
        self.t_last, self.step_last = t_start, trainer.step  # img/s: since the last read, or since training started
        self.img_per_s_smooth: float | None = None

    def __call__(self, out: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """Read, check, log and show the metrics ``out`` of ``step``; returns what was logged."""
        vals = check_finite(out, step, self.ck_dir)  # the one host sync every log_every steps
        now = time.perf_counter()
        vals["img_per_s"] = (step - self.step_last) * self.p.batch_size * self.world / max(now - self.t_last, 1e-9)
        self.t_last, self.step_last = now, step
        vals["lr_g"] = self.trainer.opt_g.param_groups[0]["lr"]
        vals["lr_d"] = self.trainer.opt_d.param_groups[0]["lr"]
        vals["warn_fast_path_fallback"] = float(self.runner.fallback is not None)
        if self.tracker is not None:
            msgs, warn = self.tracker.update(vals["loss_d_adv"], vals["grad_norm_d"], vals["grad_norm_g"])
            vals.update(warn)
            for m in msgs:
                say(f"warning: step {step}: {m}")
        self.logger.metrics(step, vals)
        self.img_per_s_smooth = (vals["img_per_s"] if self.img_per_s_smooth is None
                                 else 0.7 * self.img_per_s_smooth + 0.3 * vals["img_per_s"])
        self.bar.set_postfix_str(f"loss_d {vals['loss_d']:.3f} loss_g {vals['loss_g']:.3f} D(x) {vals['d_real']:.2f} "
                                 f"D(G(z)) {vals['d_fake']:.2f} {self.img_per_s_smooth:.0f} img/s", refresh=False)
        return vals
