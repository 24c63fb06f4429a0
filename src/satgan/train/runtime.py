"""Where training runs: device, CPU threads, DistributedDataParallel ranks, seeds and RNG state."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from satgan.errors import TrainingError


def say(msg: str) -> None:
    """Progress and warnings go to stderr (DVC shows them; stdout stays clean), above the progress bar.

    Under torchrun only rank 0 says them (:func:`dist_from_env`): every rank runs the same steps and
    would repeat each line once per process. The other ranks stay quiet but for errors, which
    :func:`satgan.cli.run_main` prints from whichever rank meets one.
    """
    if not dist_from_env().main:
        return
    tqdm.write(f"train: {msg}", file=sys.stderr)


@dataclasses.dataclass(frozen=True)
class Dist:
    """This process's place in a ``torchrun`` job (the defaults: a single process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> Dist:
    """The ranks ``torchrun`` sets in the environment (not params: the launcher decides them)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ["LOCAL_RANK"]))


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """``torchrun --standalone --nproc_per_node=nproc`` running ``argv`` (a script and its arguments) on this machine.

    ``--standalone`` rendezvouses on a free local port, so two such jobs on one machine do not collide.
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *argv]


def relaunch_under_torchrun(nproc: int, device_choice: str) -> None:
    """``train.nproc`` > 1: replace this process by torchrun running this same script in ``nproc`` processes.

    ``exec`` (not a child process) so that the stage's pid *is* the launcher: DVC's Ctrl-C or a
    SIGTERM reaches torchrun, which stops its workers; they die with it on a SIGKILL too
    (:func:`die_with_launcher`). Never returns.
    """
    if device_choice != "cpu" and torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise TrainingError(f"train.nproc is {nproc} but this machine has {torch.cuda.device_count()} CUDA device(s) "
                            "(one process per GPU; set train.nproc to at most that, or train.device: cpu)")
    cmd = torchrun_command(nproc, [os.path.abspath(sys.argv[0]), *sys.argv[1:]])
    say(f"train.nproc={nproc}: relaunching under torchrun ({' '.join(cmd[1:5])})")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)


def die_with_launcher() -> None:
    """A torchrun worker: be killed when the launcher dies, even by SIGKILL (Linux; elsewhere nothing).

    torchrun starts each worker in a session of its own, so a ``kill -9`` of the launcher (the
    stage, under ``train.nproc``) would leave its workers training and writing checkpoints
    behind a rerun's back. PR_SET_PDEATHSIG asks the kernel to SIGKILL this process when its
    parent exits.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1  # <linux/prctl.h>
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) != 0:
        return  # not fatal: the job runs as before, only without this safety net
    if os.getppid() != parent:  # the launcher died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def local_world_size() -> int:
    """Processes of this job on this machine (``torchrun`` sets it; 1 otherwise)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def pick_device(choice: str, local_rank: int) -> torch.device:
    """``train.device``: ``cpu``, ``cuda`` (an error without one) or ``auto`` (CUDA when available)."""
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@contextlib.contextmanager
def process_group(device: torch.device, dist: Dist) -> Iterator[None]:
    """The DDP process group for the duration of training (NCCL on GPUs, gloo on CPUs); nothing for one process."""
    if not dist.enabled:
        yield
        return
    import torch.distributed as tdist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        tdist.destroy_process_group()


def all_ranks_agree(flag: bool, device: torch.device, dist: Dist) -> bool:
    """Rank 0's ``flag`` on every rank (a broadcast; a host sync, so only for rare decisions)."""
    if not dist.enabled:
        return flag
    import torch.distributed as tdist

    t = torch.tensor([int(flag)], device=device)
    tdist.broadcast(t, src=0)
    return bool(t.item())


# cuBLAS's deterministic workspace setting (NVIDIA's cuBLAS docs, "Results reproducibility";
# PyTorch's reproducibility notes): without it cuBLAS may pick reduction splits per stream.
CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def determinism(deterministic: bool, device: torch.device) -> Iterator[str]:
    """``train.deterministic`` for the duration of training; yields the mode's name for the log line.

    On: ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic kernel
    raises instead of silently varying), and on CUDA cuDNN's deterministic algorithms without
    benchmark autotuning plus ``CUBLAS_WORKSPACE_CONFIG``. Off: PyTorch's defaults, and cuDNN
    autotuning on CUDA. The previous settings are restored on exit (the environment variable
    stays: cuBLAS reads it once per process).

    ``torch.utils.deterministic.fill_uninitialized_memory`` is turned off while on: it NaN-fills
    every fresh allocation so that a program *reading* uninitialized memory still repeats
    itself, and the step never reads any (each buffer it allocates is written first). Left on,
    it was 520 extra fills per default step, a third of the step's CPU time in a profile
    (docs/benchmarks.md); off, two runs still give identical model files.
    """
    import torch.utils.deterministic as tud

    old = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
           torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, tud.fill_uninitialized_memory)
    if deterministic and device.type == "cuda":
        # cuBLAS reads the variable once, at its first call in the process (PyTorch caches the
        # parsed workspace size), so this must run before any matmul on the GPU: train() calls it
        # first thing (in every torchrun worker too). A value the user set is kept.
        late = torch.cuda.is_initialized() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        if late:
            say(f"warning: CUDA was already in use in this process when train.deterministic set "
                f"CUBLAS_WORKSPACE_CONFIG; if cuBLAS had run, set CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} "
                "before starting Python")
    torch.use_deterministic_algorithms(deterministic)
    tud.fill_uninitialized_memory = False
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
    try:
        yield "deterministic" if deterministic else "non-deterministic"
    finally:
        torch.use_deterministic_algorithms(old[0], warn_only=old[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old[2], old[3]
        tud.fill_uninitialized_memory = old[4]


def any_rank(flag: bool, device: torch.device, dist: Dist) -> bool:
    """True on every rank when ``flag`` is true on any (an all-reduce; a host sync, so only for rare decisions)."""
    if not dist.enabled:
        return flag
    import torch.distributed as tdist

    t = torch.tensor([int(flag)], device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())


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
    """Inverse of :func:`rng_state`; a malformed state raises ``TypeError``/``ValueError``/``KeyError``/``RuntimeError``."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


class RngState:
    """The global RNG streams (Python, numpy, torch CPU and CUDA) as a checkpoint part."""

    def state_dict(self) -> dict[str, Any]:
        return rng_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(state)
