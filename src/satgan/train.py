"""The train stage: a DCGAN with switchable hacks, resumable checkpoints, dvclive logging.

``train(params, data_dir, out_dir, checkpoints_dir, live_dir)`` is the whole stage. It is
importable without DVC: only the logging path imports dvclive (and only when ``live_dir``
is given).

Speed (the GPU path; everything falls back to plain eager fp32 on a CPU):
- the whole dataset lives on the device when it fits ``data_budget_mb``; otherwise a
  background thread gathers batches from the memmap into pinned memory;
- bf16 autocast (``amp``), channels_last (``channels_last``), fused Adam;
- no host sync inside the step: the step returns metric *tensors*; the loop reads them
  as floats only every ``log_every`` steps (that is also when NaN/inf is detected);
- ``compile: cuda_graph`` captures the whole D+G step in one CUDA graph (randomness
  included: noise, labels, augmentation and replay indices are drawn inside it);
  ``torch_compile`` compiles G and D instead.

Reproducibility: one seed drives Python, numpy and torch; on a CPU two runs with the same
params give bit-identical weights, and a run killed at any moment and rerun resumes from its
last checkpoint to the same final weights. Checkpoints hold everything the step reads.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import pickle
import queue
import random
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from satgan import hacks as H
from satgan.arrays import open_prepared
from satgan.errors import DataError, TrainingError
from satgan.fsutil import atomic_path, sha256_file
from satgan.model import ModelConfig, build_discriminator, build_generator, discriminator_features
from satgan.modelio import save_model
from satgan.trainparams import TrainParams

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "satgan-train-checkpoint/1"
TILES_FILE = "tiles.npy"
GRAPH_WARMUP_STEPS = 3


def say(msg: str) -> None:
    """Progress and warnings go to stderr (DVC shows them; stdout stays clean)."""
    print(f"train: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- setup helpers


def model_config(p: TrainParams, image_size: int, channels: int) -> ModelConfig:
    """The architecture implied by the params and the data's sidecar."""
    h = p.hacks
    return ModelConfig(
        image_size=image_size,
        channels=channels,
        nz=p.nz,
        ngf=p.ngf,
        ndf=p.ndf,
        g_activation="leaky_relu" if h.leaky_relu_g else "relu",
        norm="instance" if h.instance_norm else "batch",
        g_dropout=h.g_dropout.p if h.g_dropout.enabled else 0.0,
        upsample=h.checkerboard.mode if h.checkerboard.enabled else "deconv",
        minibatch_stddev=h.minibatch_stddev,
        init=p.init,
    )


def pick_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def cpu_threads(requested: int, local_world: int) -> int:
    """``requested``, or (0 = auto) all cores but one on machines with more than 2, split between local ranks."""
    if requested > 0:
        return requested
    cores = os.cpu_count() or 1
    usable = cores - 1 if cores > 2 else cores
    return max(1, usable // max(local_world, 1))


def seed_everything(seed: int) -> None:
    """One seed for Python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """All RNG states as plain types and tensors (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- data


class ResidentData:
    """The whole dataset as one device tensor; batches are drawn inside the step (graph-safe)."""

    def __init__(self, array: np.ndarray, device: torch.device, channels_last: bool) -> None:
        t = torch.from_numpy(np.array(array))  # a writable in-memory copy of the memmap
        # fp16 halves GPU memory and is cast in the step; CPUs are slow at fp16, so keep fp32 there
        t = t.to(device=device, dtype=torch.float16 if device.type == "cuda" else torch.float32)
        self.data = t.contiguous(memory_format=torch.channels_last) if channels_last else t

    def sample(self, batch: int) -> torch.Tensor:
        idx = torch.randint(0, self.data.shape[0], (batch,), device=self.data.device)
        return self.data.index_select(0, idx).float()


class StreamingData:
    """Batches gathered from the memmap by a background thread into pinned memory.

    Batch ``k`` uses indices from ``numpy.random.default_rng([seed, rank, k])``, so the
    sequence is deterministic and resumable from the checkpointed batch counter ``k``.
    """

    def __init__(self, array: np.ndarray, device: torch.device, batch: int, seed: int, rank: int, start: int) -> None:
        self.array, self.device, self.batch, self.seed, self.rank = array, device, batch, seed, rank
        self.drawn = start
        self._queue: queue.Queue[torch.Tensor] = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(start,), daemon=True)
        self._thread.start()

    def _fill(self, k: int) -> None:
        pin = self.device.type == "cuda"
        while not self._stop.is_set():
            idx = np.sort(np.random.default_rng([self.seed, self.rank, k]).integers(0, len(self.array), self.batch))
            t = torch.from_numpy(np.asarray(self.array[idx], dtype=np.float32))
            self._queue.put(t.pin_memory() if pin else t)
            k += 1

    def next(self) -> torch.Tensor:
        self.drawn += 1
        return self._queue.get().to(self.device, non_blocking=True)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()


# --------------------------------------------------------------------------- the trainer


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


class Trainer:
    """Holds the nets, optimizers and hack state; :meth:`step` is one D+G iteration."""

    def __init__(self, p: TrainParams, cfg: ModelConfig, array: np.ndarray, device: torch.device, dist: Dist) -> None:
        self.p, self.h, self.cfg, self.device, self.dist = p, p.hacks, cfg, device, dist
        h = self.h
        cuda = device.type == "cuda"
        self.batch = p.batch_size
        self.d_steps = h.extra_steps.d_steps if h.extra_steps.enabled else 1
        self.g_steps = h.extra_steps.g_steps if h.extra_steps.enabled else 1
        self.n_replay = round(h.replay.fraction * self.batch) if h.replay.enabled else 0
        self.channels_last = p.channels_last and cuda
        self.amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (p.amp and cuda) else contextlib.nullcontext

        # Same seed on every rank so the initial weights agree; ranks then diverge in their noise.
        seed_everything(p.seed)
        self.g = build_generator(cfg).to(device)
        self.d = build_discriminator(cfg).to(device)
        if self.channels_last:
            self.g.to(memory_format=torch.channels_last)
            self.d.to(memory_format=torch.channels_last)
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False) if h.ema.enabled else None
        # Checkpoint swap (ganhacks #8): frozen snapshots of earlier G and D, refreshed every `every` steps.
        self.g_old = copy.deepcopy(self.g).requires_grad_(False) if h.checkpoint_swap.enabled else None
        self.d_old = copy.deepcopy(self.d).requires_grad_(False) if h.checkpoint_swap.enabled else None
        self.swap_flag = torch.zeros((), dtype=torch.bool, device=device)

        self.graph_mode = p.compile == "cuda_graph" and cuda and not dist.enabled and not h.moderated.enabled
        if p.compile != "none" and not cuda:
            say(f"compile={p.compile} needs CUDA; running eager on {device}")
        elif p.compile == "cuda_graph" and not self.graph_mode:
            say("compile=cuda_graph is not used with DDP or the moderated schedule (host decisions); running eager")
        fused = cuda
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=p.lr_g, betas=(p.beta1, p.beta2), fused=fused, capturable=self.graph_mode)
        if h.sgd_discriminator.enabled:
            # ganhacks #9: SGD for D, Adam for G
            self.opt_d: torch.optim.Optimizer = torch.optim.SGD(self.d.parameters(), lr=h.sgd_discriminator.lr, momentum=h.sgd_discriminator.momentum)
        else:
            self.opt_d = torch.optim.Adam(self.d.parameters(), lr=p.lr_d, betas=(p.beta1, p.beta2), fused=fused, capturable=self.graph_mode)
        self.hist_g = H.HistoricalAverage(list(self.g.parameters())) if h.historical_averaging.enabled else None
        self.hist_d = H.HistoricalAverage(list(self.d.parameters())) if h.historical_averaging.enabled else None
        self.step_t = torch.zeros((), dtype=torch.int64, device=device)  # device-side step for decay schedules
        self.step = 0
        self.batches_drawn = 0

        # Replay buffer prefilled from the initial G (eval mode: no BN statistics are touched).
        self.replay: H.ReplayBuffer | None = None
        if h.replay.enabled:
            with torch.no_grad():
                self.g.eval()
                z = H.sample_latent(h.replay.size, cfg.nz, h.gaussian_latent, device)
                self.replay = H.ReplayBuffer(self.g(z).float().contiguous())
                self.g.train()

        # Fixed noise for the sample grid, from its own generator so it never shifts the training RNG.
        gen = torch.Generator().manual_seed(p.seed)
        fixed = torch.randn(p.n_samples, cfg.nz, 1, 1, generator=gen)
        self.fixed_noise = (fixed if h.gaussian_latent else torch.rand(p.n_samples, cfg.nz, 1, 1, generator=gen) * 2 - 1).to(device)

        budget = p.data_budget_mb * 2**20
        item = 2 if cuda else 4
        self.resident = array.size * item <= budget
        self.array = array
        self.data_resident = ResidentData(array, device, self.channels_last) if self.resident else None
        self.stream: StreamingData | None = None
        self.static_real: list[torch.Tensor] = []

        self.g_run: nn.Module = self.g
        self.d_run: nn.Module = self.d
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if cuda else None
            # broadcast_buffers=False: D runs several forwards per backward and BN buffers are
            # updated in place; broadcasting them would break autograd (and rank 0 checkpoints anyway).
            self.g_run = DDP(self.g, device_ids=ids, broadcast_buffers=False)
            self.d_run = DDP(self.d, device_ids=ids, broadcast_buffers=False)
        self.d_fwd: nn.Module = self.d  # raw D for G's step: D's gradients are not wanted there
        if p.compile == "torch_compile" and cuda:
            self.g_run, self.d_run, self.d_fwd = (torch.compile(m) for m in (self.g_run, self.d_run, self.d_fwd))
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_out: dict[str, torch.Tensor] | None = None

    # ---------------------------------------------------------------- data feed

    def start_stream(self) -> None:
        if not self.resident and self.stream is None:
            self.stream = StreamingData(self.array, self.device, self.batch, self.p.seed, self.dist.rank, self.batches_drawn)
            self.static_real = [torch.empty(self.batch, self.cfg.channels, self.cfg.image_size, self.cfg.image_size, device=self.device)
                                for _ in range(self.d_steps)]

    def _fill_static(self) -> None:
        """Streaming path: copy this iteration's real batches into the step's fixed input buffers."""
        if self.stream is not None:
            for buf in self.static_real:
                buf.copy_(self.stream.next(), non_blocking=True)
            self.batches_drawn = self.stream.drawn

    def _real(self, i: int) -> torch.Tensor:
        """The i-th real batch of this iteration, augmented (dihedral flips/rotations when on)."""
        if self.data_resident is not None:
            x = self.data_resident.sample(self.batch)
        else:
            x = self.static_real[min(i, len(self.static_real) - 1)]  # moderated extra steps reuse the last batch
        if self.h.dihedral_augment:
            x = H.dihedral_augment(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _z(self) -> torch.Tensor:
        return H.sample_latent(self.batch, self.cfg.nz, self.h.gaussian_latent, self.device)

    # ---------------------------------------------------------------- the step

    def _d_update(self, real: torch.Tensor, fake: torch.Tensor, noise_std: torch.Tensor) -> dict[str, torch.Tensor]:
        """One D update on an all-real and an all-fake batch (``fake`` already detached)."""
        h, b = self.h, self.batch
        if self.g_old is not None:
            with torch.no_grad(), self.amp():
                old = self.g_old(self._z())
            fake = torch.where(self.swap_flag, old.to(fake.dtype), fake)  # ganhacks #8: D vs an older G
        old = self.replay.draw(self.n_replay, fake.dtype) if self.replay is not None else None
        clean_fake = fake  # the buffer keeps fakes as G made them; instance noise is drawn afresh on replay
        if h.instance_noise.enabled:
            real = H.add_instance_noise(real, noise_std)
            fake = H.add_instance_noise(fake, noise_std)
            old = H.add_instance_noise(old, noise_std) if old is not None else None
        soft = h.soft_labels
        flip = h.noisy_labels.fraction if h.noisy_labels.enabled else 0.0
        fake_range = soft.fake if soft.enabled and not soft.one_sided else None
        t_real = H.label_targets(b, True, self.device, soft.real if soft.enabled else None, flip)
        t_fake = H.label_targets(b, False, self.device, fake_range, flip)
        with self.amp():
            if h.separate_batches:
                # ganhacks #4: all-real and all-fake batches, so BN statistics never mix the two.
                # Replayed fakes get a forward of their own for the same reason: mixed into the
                # fresh batch, their statistics made D's view of fresh fakes differ from the
                # all-fresh batch G is scored on, and once G collapsed that batch normalised its
                # sameness away, D called it real in G's step and G stalled (docs/experiments.md).
                real_logits, fake_logits = self.d_run(real), self.d_run(fake)
                old_logits = self.d_run(old) if old is not None else None
            else:
                parts = self.d_run(torch.cat([real, fake] + ([old] if old is not None else [])))
                real_logits, fake_logits = parts[:b], parts[b:2 * b]
                old_logits = parts[2 * b:] if old is not None else None
            loss_fake = F.binary_cross_entropy_with_logits(fake_logits.float(), t_fake)
            if old_logits is not None:
                # past fakes carry `replay.fraction` of the fake term, as when they filled that share of the batch
                t_old = H.label_targets(self.n_replay, False, self.device, fake_range, flip)
                frac = self.n_replay / b
                loss_fake = (1 - frac) * loss_fake + frac * F.binary_cross_entropy_with_logits(old_logits.float(), t_old)
            adv = F.binary_cross_entropy_with_logits(real_logits.float(), t_real) + loss_fake
        loss = adv
        l2 = torch.zeros((), device=self.device)
        if h.l2_penalty.enabled:
            l2 = h.l2_penalty.d * H.l2_penalty(list(self.d.parameters()))
            loss = loss + l2
        if self.hist_d is not None:
            loss = loss + h.historical_averaging.weight * self.hist_d.penalty()
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = H.grad_norm(list(self.d.parameters()))
        self.opt_d.step()
        if self.replay is not None:
            self.replay.push(clean_fake, self.n_replay)
        return {
            "loss_d": loss.detach(), "loss_d_adv": adv.detach(), "loss_d_l2": l2.detach(),
            "d_real": torch.sigmoid(real_logits.detach().float()).mean(),
            "d_fake": torch.sigmoid(fake_logits.detach().float()).mean(),
            "grad_norm_d": gnorm,
            "_real_logits": real_logits.detach(), "_fake_logits": fake_logits.detach(),
        }

    def _g_update(self, fake: torch.Tensor, real: torch.Tensor, noise_std: torch.Tensor) -> dict[str, torch.Tensor]:
        """One G update through the raw D (D's parameters frozen for this backward)."""
        h = self.h
        d_params = list(self.d.parameters())
        for q in d_params:
            q.requires_grad_(False)
        d_in = H.add_instance_noise(fake, noise_std) if h.instance_noise.enabled else fake
        with self.amp():
            logits = self.d_fwd(d_in).float()
            if self.d_old is not None:
                logits = torch.where(self.swap_flag, self.d_old(d_in).float(), logits)  # ganhacks #8: G vs an older D
            adv = H.generator_adv_loss(logits, h.non_saturating)  # ganhacks #2 when non_saturating
            fm = torch.zeros((), device=self.device)
            if h.feature_matching.enabled:
                with torch.no_grad():
                    f_real = discriminator_features(self.d, real)
                fm = H.feature_matching_loss(f_real, discriminator_features(self.d, d_in))
        loss = adv + h.feature_matching.weight * fm if h.feature_matching.enabled else adv
        l2 = torch.zeros((), device=self.device)
        if h.l2_penalty.enabled:
            l2 = h.l2_penalty.g * H.l2_penalty(list(self.g.parameters()))
            loss = loss + l2
        if self.hist_g is not None:
            loss = loss + h.historical_averaging.weight * self.hist_g.penalty()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        for q in d_params:
            q.requires_grad_(True)
        gnorm = H.grad_norm(list(self.g.parameters()))
        self.opt_g.step()
        return {"loss_g": loss.detach(), "loss_g_adv": adv.detach(), "loss_g_l2": l2.detach(), "loss_g_fm": fm.detach(),
                "d_fake_g": torch.sigmoid(logits.detach()).mean(), "grad_norm_g": gnorm}

    def _step_body(self) -> dict[str, torch.Tensor]:
        """One iteration, device-side only: (1) update D, (2) update G. Returns metric tensors."""
        h = self.h
        noise_std = (H.instance_noise_std(self.step_t, h.instance_noise.std, h.instance_noise.decay_iters)
                     if h.instance_noise.enabled else torch.zeros((), device=self.device))
        # (1) update D: d_steps times; the last one keeps G's graph so step (2) reuses its fakes
        for i in range(self.d_steps):
            real = self._real(i)
            last = i == self.d_steps - 1
            with torch.set_grad_enabled(last), self.amp():
                fake = self.g_run(self._z())
            out_d = self._d_update(real, fake.detach(), noise_std)
        if h.moderated.enabled:
            # Moderated schedule: extra D steps only while D misclassifies half of a class (host sync).
            for j in range(h.moderated.max_extra_d_steps):
                if not bool(H.moderated_needs_more_d(out_d["_real_logits"], out_d["_fake_logits"])):
                    break
                with torch.no_grad(), self.amp():
                    extra_fake = self.g_run(self._z())
                out_d = self._d_update(self._real(self.d_steps + j), extra_fake, noise_std)
        # (2) update G: g_steps times, fresh fakes after the first
        for j in range(self.g_steps):
            if j > 0:
                with self.amp():
                    fake = self.g_run(self._z())
            out_g = self._g_update(fake, real, noise_std)
        if self.g_ema is not None:
            H.ema_update(self.g_ema, self.g, h.ema.decay, self.step_t)
        if self.hist_g is not None and self.hist_d is not None:
            self.hist_g.update()
            self.hist_d.update()
        self.step_t += 1
        out = {k: v for k, v in {**out_d, **out_g}.items() if not k.startswith("_")}
        out["instance_noise_std"] = noise_std.detach().float()
        return out

    def run_step(self) -> dict[str, torch.Tensor]:
        """One training iteration; through a captured CUDA graph when ``graph_mode``."""
        h = self.h
        if self.g_old is not None:
            every = h.checkpoint_swap.every
            if self.step > 0 and self.step % every == 0:
                # refresh the snapshots, then the next `length` steps play against them
                self.g_old.load_state_dict(self.g.state_dict())
                self.d_old.load_state_dict(self.d.state_dict())
            self.swap_flag.fill_(H.swap_active(self.step, every, h.checkpoint_swap.length))
        self._fill_static()
        if not self.graph_mode:
            out = self._step_body()
        elif self._graph is not None:
            self._graph.replay()
            out = self._graph_out
        elif self.step < GRAPH_WARMUP_STEPS:
            # CUDA graphs need warm-up iterations on a side stream (these are real training steps)
            s = torch.cuda.Stream(self.device)
            s.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(s):
                out = self._step_body()
            torch.cuda.current_stream(self.device).wait_stream(s)
        else:
            self._graph = torch.cuda.CUDAGraph()
            self.opt_g.zero_grad(set_to_none=True)
            self.opt_d.zero_grad(set_to_none=True)
            with torch.cuda.graph(self._graph):
                self._graph_out = self._step_body()
            self._graph.replay()  # capture records only; replay runs this iteration
            out = self._graph_out
        self.step += 1
        return out

    # ---------------------------------------------------------------- sampling, checkpoints

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        """uint8 (H, W, C) grid of the sampling G (EMA when on) on the fixed noise."""
        from satgan.imageops import make_grid

        g = self.g_ema if self.g_ema is not None else self.g
        was_training = g.training
        g.eval()
        images = g(self.fixed_noise).float().cpu().numpy()
        g.train(was_training)
        grid = make_grid(images, nrow=int(math.ceil(math.sqrt(len(images)))))
        return grid[..., 0] if grid.shape[-1] == 1 else grid

    def state(self, resume_hash: str, data_hash: str) -> dict[str, Any]:
        sd = lambda m: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()} if m is not None else None  # noqa: E731
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "batches_drawn": self.batches_drawn,
            "resume_hash": resume_hash,
            "data_hash": data_hash,
            "g": sd(self.g), "d": sd(self.d), "g_ema": sd(self.g_ema), "g_old": sd(self.g_old), "d_old": sd(self.d_old),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "replay": self.replay.images.detach().cpu().clone() if self.replay is not None else None,
            "hist_g": [a.cpu() for a in self.hist_g.average] if self.hist_g is not None else None,
            "hist_d": [a.cpu() for a in self.hist_d.average] if self.hist_d is not None else None,
            "hist_count": self.hist_g.count.cpu() if self.hist_g is not None else None,
            "step_t": self.step_t.cpu(),
            "rng": rng_state(),
        }

    def load_state(self, ck: dict[str, Any]) -> None:
        self.g.load_state_dict(ck["g"])
        self.d.load_state_dict(ck["d"])
        for mod, key in ((self.g_ema, "g_ema"), (self.g_old, "g_old"), (self.d_old, "d_old")):
            if mod is not None:
                mod.load_state_dict(ck[key])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        if self.replay is not None:
            self.replay.images.copy_(ck["replay"])
        if self.hist_g is not None and self.hist_d is not None:
            for dst, src in zip(self.hist_g.average + self.hist_d.average, ck["hist_g"] + ck["hist_d"]):
                dst.copy_(src)
            self.hist_g.count.copy_(ck["hist_count"])
            self.hist_d.count.copy_(ck["hist_count"])
        self.step_t.copy_(ck["step_t"])
        self.step = ck["step"]
        self.batches_drawn = ck["batches_drawn"]
        set_rng_state(ck["rng"])
        if self.dist.rank > 0:
            # other ranks continue with their own noise streams, derived from (seed, rank, step)
            torch.manual_seed(hash((self.p.seed, self.dist.rank, self.step)) % 2**63)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then an atomic rename: a kill never leaves half a checkpoint."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (``weights_only=True``: tensors and plain data only), or None."""
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        say(f"{path}: unreadable checkpoint ({exc}); starting fresh")
        return None
    if not isinstance(ck, dict) or "format" not in ck or ck["format"] != CHECKPOINT_FORMAT:
        say(f"{path}: not a satgan checkpoint; starting fresh")
        return None
    return ck


# --------------------------------------------------------------------------- logging


class Logger:
    """dvclive on rank 0 (imported only here), a no-op elsewhere or without ``live_dir``."""

    def __init__(self, live_dir: Path | None, resume: bool, enabled: bool) -> None:
        self.live = None
        if live_dir is not None and enabled:
            from dvclive import Live

            # dvcyaml=False: plots are declared in the project's dvc.yaml, never rewritten by dvclive
            self.live = Live(dir=str(live_dir), resume=resume, dvcyaml=False, save_dvc_exp=False)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for k, v in values.items():
            self.live.log_metric(f"train/{k}", v)
        self.live.make_summary()

    def image(self, step: int, grid: np.ndarray) -> None:
        if self.live is not None:
            self.live.step = step
            self.live.log_image(f"samples/{step}.png", grid)  # a folder of steps: dvc plots shows a slider

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


# --------------------------------------------------------------------------- the stage


def _check_finite(out: dict[str, torch.Tensor], step: int, ck_dir: Path) -> dict[str, float]:
    """The step's metrics as floats; a NaN/inf loss or norm stops training with a clear error."""
    vals = {k: float(v) for k, v in out.items()}
    bad = [k for k, v in vals.items() if not math.isfinite(v)]
    if bad:
        raise TrainingError(
            f"training diverged at step {step}: {', '.join(f'{k}={vals[k]}' for k in bad)} "
            f"(try lower learning rates or other hacks; the last good checkpoint is in {ck_dir})"
        )
    return vals


def _dist_from_env() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun, not a param
    if world <= 1:
        return Dist()
    return Dist(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ["LOCAL_RANK"]))


def train(
    p: TrainParams,
    data_dir: str | Path,
    out_dir: str | Path,
    checkpoints_dir: str | Path,
    live_dir: str | Path | None = None,
    on_step: Callable[[int], None] | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Train (or resume) on ``data_dir/tiles.npy`` and write the model to ``out_dir``; returns model.json.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the same call trains with DistributedDataParallel:
    NCCL on GPUs, gloo on CPUs; ``batch_size`` is per process; rank 0 logs and writes files.

    ``max_seconds`` (a wall-clock budget, bench/quality_bench.py): stop after the first step
    that ends past this many seconds of the training loop, before ``iterations``; that step
    logs, samples and checkpoints as a final one, and the model is written as usual. Single
    process only (each rank would read its own clock and they could stop at different steps).
    """
    dist = _dist_from_env()
    if max_seconds is not None and (dist.enabled or max_seconds <= 0):
        raise ValueError(f"max_seconds needs a single process and a positive budget, got {max_seconds} "
                         f"with world size {dist.world}")
    device = pick_device(p.device, dist.local_rank)
    if dist.enabled:
        import torch.distributed as tdist

        if device.type == "cuda":
            torch.cuda.set_device(device)
        tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(p, Path(data_dir), Path(out_dir), Path(checkpoints_dir), Path(live_dir) if live_dir else None, device, dist, on_step,
                      max_seconds)
    finally:
        if dist.enabled:
            import torch.distributed as tdist

            tdist.destroy_process_group()


def _train(p: TrainParams, data_dir: Path, out_dir: Path, ck_dir: Path, live_dir: Path | None,
           device: torch.device, dist: Dist, on_step: Callable[[int], None] | None,
           max_seconds: float | None = None) -> dict[str, Any]:
    array, meta = open_prepared(data_dir / TILES_FILE)
    if len(array) < 2:
        raise DataError(f"{data_dir / TILES_FILE}: need at least 2 tiles to train, found {len(array)}")
    torch.set_num_threads(cpu_threads(p.threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data_hash = sha256_file(data_dir / TILES_FILE)
    resume_hash = p.resume_hash()
    cfg = model_config(p, int(meta["image_size"]), int(meta["channels"]))
    trainer = Trainer(p, cfg, array, device, dist)

    ck_path = ck_dir / CHECKPOINT_FILE
    ck = load_checkpoint(ck_path)
    resumed = False
    if ck is None:
        say("no checkpoint: starting fresh")
    elif ck["resume_hash"] != resume_hash:
        say(f"{ck_path}: train params changed since step {ck['step']} (keys other than iterations/*_every): starting fresh")
    elif ck["data_hash"] != data_hash:
        say(f"{ck_path}: training data changed since step {ck['step']}: starting fresh")
    elif ck["step"] > p.iterations:
        say(f"{ck_path}: checkpoint step {ck['step']} is past train.iterations={p.iterations}: starting fresh")
    else:
        trainer.load_state(ck)
        resumed = True
        say(f"resuming from {ck_path} at step {ck['step']} of {p.iterations}")
    del ck
    say(f"{cfg.image_size}x{cfg.image_size}x{cfg.channels}, {len(array)} tiles, device {device}"
        f"{f' x{dist.world} (DDP)' if dist.enabled else ''}, data {'resident' if trainer.resident else 'streamed'}, "
        f"graph {'on' if trainer.graph_mode else 'off'}, threads {torch.get_num_threads()}")

    logger = Logger(live_dir, resume=resumed, enabled=dist.main)
    trainer.start_stream()
    ft = p.hacks.failure_tracking
    tracker = H.FailureTracker(ft.d_loss_floor, ft.patience, ft.grad_norm_limit) if ft.enabled else None
    t_last, step_last = time.perf_counter(), trainer.step
    t_loop = t_last  # max_seconds counts from here: the training loop, not the setup above
    out_of_time = False
    try:
        while trainer.step < p.iterations and not out_of_time:
            out = trainer.run_step()
            step = trainer.step
            if on_step is not None:
                on_step(step)
            out_of_time = max_seconds is not None and time.perf_counter() - t_loop >= max_seconds
            final = step == p.iterations or out_of_time
            if step % p.log_every == 0 or final:
                vals = _check_finite(out, step, ck_dir)  # the one host sync every log_every steps
                now = time.perf_counter()
                vals["img_per_s"] = (step - step_last) * p.batch_size * dist.world / max(now - t_last, 1e-9)
                t_last, step_last = now, step
                vals["lr_g"] = trainer.opt_g.param_groups[0]["lr"]
                vals["lr_d"] = trainer.opt_d.param_groups[0]["lr"]
                if tracker is not None:
                    msgs, warn = tracker.update(vals["loss_d_adv"], vals["grad_norm_d"], vals["grad_norm_g"])
                    vals.update(warn)
                    for m in msgs:
                        say(f"warning: step {step}: {m}")
                logger.metrics(step, vals)
                if dist.main:
                    say(f"step {step}/{p.iterations} loss_d {vals['loss_d']:.3f} loss_g {vals['loss_g']:.3f} "
                        f"D(x) {vals['d_real']:.2f} D(G(z)) {vals['d_fake']:.2f} {vals['img_per_s']:.0f} img/s")
            if step % p.sample_every == 0 or final:
                logger.image(step, trainer.sample_grid())
            if (step % p.checkpoint_every == 0 or final) and dist.main:
                _check_finite(out, step, ck_dir)  # never checkpoint diverged weights
                save_checkpoint(ck_path, trainer.state(resume_hash, data_hash))
    finally:
        if trainer.stream is not None:
            trainer.stream.close()
        logger.close()

    if out_of_time and trainer.step < p.iterations:
        say(f"max_seconds={max_seconds:g} reached at step {trainer.step} of {p.iterations}")
    card: dict[str, Any] = {}
    if dist.main:
        card = save_model(
            out_dir, trainer.g, trainer.d, cfg, generator_ema=trainer.g_ema,
            params_hash=p.resume_hash(), data_hash=data_hash, step=trainer.step,
            extra={"resumed": resumed, "world_size": dist.world, "device": str(device.type)},
        )
        say(f"wrote {out_dir} at step {trainer.step}")
    return card

