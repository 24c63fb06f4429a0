"""OpenMP's idle-wait policy and thread placement for torch's CPU thread pool, chosen before torch loads.

After each parallel region OpenMP's worker threads wait for the next one. GNU libgomp (the
runtime of PyTorch's Linux wheels) spins for ``GOMP_SPINCOUNT`` iterations (300,000 by default)
before it sleeps (the GCC manual, "OMP_WAIT_POLICY" and "GOMP_SPINCOUNT"). A training step has
thousands of such barriers, and on a 2-core machine with two busy processes beside it each one
can wait for a partner the scheduler has put off: 2 threads of libgomp's default trained at 0.1-0.5x
the speed of 1 thread (issue 20). satgan's setting, chosen on ``bench/busy_bench.py``
(docs/benchmarks.md, "a longer spin with bound threads"):

- Placement (:func:`bind_threads`): the train stage binds its threads one per core
  (``OMP_PROC_BIND=true``, ``OMP_PLACES=cores``) when it trains on 2 or more as one process, so the
  scheduler never puts both on one core, where each barrier waits a time slice.
- Wait (:func:`choose_wait_policy`): ``GOMP_SPINCOUNT=100000``, a third of libgomp's spin, then
  sleep. Bound, a waiting thread keeps its own core for about one of the competing process's time
  slices, which covers most waits for a descheduled partner; a thread that sleeps at once waits
  for the scheduler to give its core back, and one that spins 300,000 spends its share spinning.
  On a 2-core Intel box with two busy processes it kept 0.87-0.98x one thread's speed in three
  runs (runs I and J and the one before I), where the previous 10,000 kept 0.64-0.78x, unbound
  0.39-0.74x and libgomp's default 0.37-0.51x; idle it ran 0.92-1.02x libgomp's default (0.97x
  over 8 paired idle rounds), within the idle figure's noise (the default timed twice: 8.9%).

The policy changes how threads wait and where they run, not what they compute: results do not
depend on it (the thread count stays what ``train.threads`` says, never one picked from the load).
On a machine that is always busy, ``train.threads: 1`` never collapses; on one kept for training
alone, ``GOMP_SPINCOUNT=300000`` is libgomp's own default. Runtimes other than libgomp ignore
``GOMP_SPINCOUNT`` and keep their own default.

The runtime reads these variables once, when its library is loaded, i.e. at ``import torch``:
:func:`choose_wait_policy` runs from ``satgan/__init__`` so that every entry point (stages,
``python -m satgan``, the benches) sets it before torch loads; :func:`bind_for_training` runs from
the train stage before it imports torch. A policy the user set (``OMP_WAIT_POLICY``, libgomp's
``GOMP_SPINCOUNT`` or Intel OpenMP's ``KMP_BLOCKTIME``) and a placement the user set are kept.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

import yaml

POLICY_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
DEFAULT_POLICY = ("GOMP_SPINCOUNT", "100000")  # (variable, value) set when the user set none of POLICY_VARIABLES

# What choose_wait_policy decided in this process (for the training log line).
_chosen: str = "not chosen (satgan.openmp.choose_wait_policy not called)"


def choose_wait_policy(environ: MutableMapping[str, str] | None = None, torch_loaded: bool | None = None) -> str:
    """Set :data:`DEFAULT_POLICY` unless the user chose a wait policy or torch is already loaded; say which.

    ``environ``: the environment to read and update (``os.environ``); ``torch_loaded``: whether
    torch (and with it OpenMP) was imported before this call (where it was, a change could
    no longer take effect, and none is made). Returns the one-line description that
    :func:`wait_policy` gives afterwards.
    """
    global _chosen
    env = os.environ if environ is None else environ
    loaded = "torch" in sys.modules if torch_loaded is None else torch_loaded
    own = [f"{k}={env[k]}" for k in POLICY_VARIABLES if k in env]
    if own:
        _chosen = f"OpenMP wait policy from the environment ({', '.join(own)})"
    elif loaded:
        _chosen = "OpenMP wait policy: the runtime's default (torch was imported before satgan, so it is unchanged)"
    else:
        name, value = DEFAULT_POLICY
        env[name] = value
        _chosen = (f"OpenMP wait policy {name}={value} (satgan's default: spin a third of libgomp's default, then sleep; "
                   "set OMP_WAIT_POLICY or GOMP_SPINCOUNT to override)")
    return _chosen


def wait_policy() -> str:
    """What :func:`choose_wait_policy` and :func:`bind_threads` decided in this process, for a log line."""
    return f"{_chosen}; {_bound}" if _bound else _chosen


# Thread placement. On a 2-core Intel box with two busy processes beside training, 2 unbound threads
# collapsed to 0.1-0.3x of one thread's speed in some rounds (as if the scheduler had put both on one
# core, where every barrier waits a time slice); bound one per core, they did not in 13 rounds
# (docs/benchmarks.md, "busy machine: threads bound one per core"), and with the longer spin, bound
# kept 0.87-0.98x one thread's speed against 0.39-0.74x unbound (runs I, J and the one before I).
# Binding pins the process's first thread too, and threads it starts inherit that pin, so it is set
# only for a training process of 2 or more threads (the train stage, before torch loads), never by
# ``import satgan``: two 1-thread processes bound alike would share one core.
PLACEMENT_VARIABLES = ("OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY", "KMP_AFFINITY")
BIND_POLICY = (("OMP_PROC_BIND", "true"), ("OMP_PLACES", "cores"))
_bound: str = ""


def cpu_threads(requested: int, local_world: int) -> int:
    """``train.threads``: ``requested``, or (0 = auto) all cores but one on machines with more than 2, split between
    the local ranks (``local_world`` processes of this job on this machine)."""
    if requested > 0:
        return requested
    cores = os.cpu_count() or 1
    usable = cores - 1 if cores > 2 else cores
    return max(1, usable // max(local_world, 1))


def bind_threads(threads: int, environ: MutableMapping[str, str] | None = None, torch_loaded: bool | None = None,
                 cpus: int | None = None) -> str:
    """For a process about to train on ``threads`` CPU threads: bind them one per core (:data:`BIND_POLICY`) when
    there are 2 or more, as many CPUs are allowed (``cpus``, default this process's affinity), torch is not loaded
    yet and the user set none of :data:`PLACEMENT_VARIABLES`; say what was decided (also in :func:`wait_policy`).

    Placement changes where threads run, not what they compute: results are those of unbound threads.
    """
    global _bound
    env = os.environ if environ is None else environ
    loaded = "torch" in sys.modules if torch_loaded is None else torch_loaded
    allowed = len(os.sched_getaffinity(0)) if cpus is None else cpus
    own = [f"{k}={env[k]}" for k in PLACEMENT_VARIABLES if k in env]
    if own:
        _bound = f"thread placement from the environment ({', '.join(own)})"
    elif threads < 2:
        _bound = ""
    elif loaded:
        _bound = "threads not bound (torch was imported first)"
    elif allowed < threads:
        _bound = f"threads not bound ({threads} threads on {allowed} allowed CPUs)"
    else:
        env.update(BIND_POLICY)
        _bound = (f"threads bound one per core ({', '.join(f'{k}={v}' for k, v in BIND_POLICY)}; "
                  "set OMP_PROC_BIND or OMP_PLACES to override)")
    return _bound


def bind_for_training(params: str | Path) -> str:
    """The train stage, before torch loads: :func:`bind_threads` for ``train.threads`` of the ``params`` file, when the
    job is one process on this machine (``train.nproc`` 1, no torchrun ranks: each rank would bind to the same cores).
    """
    try:
        train = yaml.safe_load(Path(params).read_text(encoding="utf-8"))["train"]
        threads, nproc = train["threads"], train["nproc"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        return ""  # the stage's load_section, right after, names the file and what is wrong with it
    if not (isinstance(threads, int) and isinstance(nproc, int)) or threads < 0:
        return ""
    return bind_process(threads, nproc)


def bind_process(threads: int, nproc: int = 1) -> str:
    """:func:`bind_threads` for a training process of ``threads`` (``train.threads``: 0 = auto) threads when the job is
    one process on this machine (``nproc`` 1 and no torchrun ranks: each rank would bind to the same cores); else
    nothing. The train stage (:func:`bind_for_training`) and ``bench/busy_bench.py`` bind through it."""
    if nproc != 1 or int(os.environ.get("LOCAL_WORLD_SIZE", "1")) != 1:
        return ""
    return bind_threads(cpu_threads(threads, 1))
