"""OpenMP's idle-wait policy for torch's CPU thread pool, chosen before torch loads.

After each parallel region OpenMP's worker threads wait for the next one. GNU libgomp (the
runtime of PyTorch's Linux wheels) spins by default for ``GOMP_SPINCOUNT`` = 300,000
iterations before sleeping; a thread that spins while its partner is descheduled by another
process burns the core that partner needs, so each of a training step's ~thousands of
barriers waits a scheduler slice. On a 2-core machine with two busy processes beside it,
satgan's default (2 threads) trained at ~0.2x the speed of 1 thread (issue 20; the GCC
manual, "OMP_WAIT_POLICY" and "GOMP_SPINCOUNT", describes the spin). Sleeping at once
(``OMP_WAIT_POLICY=PASSIVE``, spin count 0) fixes the loaded case but costs every barrier a
wake-up on an idle machine: idle, it trained slower than 1 thread. A short spin,
``GOMP_SPINCOUNT=10000`` (about 10 µs, then sleep), keeps a waiting thread ready for the next
region on an idle machine and gives the core away soon on a loaded one: on NCHW steps, idle it
matched libgomp's default (0.99x), loaded it kept 0.92x of 1 thread's speed (``bench/busy_bench.py``,
docs/benchmarks.md, run B), meeting both of issue 20's goals where PASSIVE met only the loaded one
(faster loaded, 0.90x idle). Since the CPU trains channels_last (shorter steps, the same
barriers) it keeps 0.88-0.93x loaded but gives up 11-22% idle against libgomp's default, and no
spin count met both goals (run C and its sweep). On a 2-core Intel box with native bf16 it met
both by the bench's medians (idle 1.04-1.05x, loaded 0.80-0.86x: runs D and E), but there every
2-thread policy, this one included, fell to ~0.1x of one thread in some loaded rounds: on a machine
that is always busy, ``train.threads: 1`` is the robust choice. It stays the default because the loaded case is
the 5x collapse; on a machine kept for training alone set ``GOMP_SPINCOUNT=300000``, on one that
is always loaded ``OMP_WAIT_POLICY=PASSIVE``. The thread count stays what ``train.threads`` says, never one picked from the
load, and the policy changes only how threads wait, not what they compute, so results do not
depend on it. Runtimes other than libgomp ignore ``GOMP_SPINCOUNT`` and keep their own default.

The runtime reads these variables once, when its library is loaded, i.e. at ``import torch``:
:func:`choose_wait_policy` runs from ``satgan/__init__`` so that every entry point (stages,
``python -m satgan``, the benches) sets it before torch loads. A policy the user set
(``OMP_WAIT_POLICY``, libgomp's ``GOMP_SPINCOUNT`` or Intel OpenMP's ``KMP_BLOCKTIME``) is kept.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

POLICY_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
DEFAULT_POLICY = ("GOMP_SPINCOUNT", "10000")  # (variable, value) set when the user set none of POLICY_VARIABLES

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
        _chosen = (f"OpenMP wait policy {name}={value} (satgan's default: a short spin, then sleep; set OMP_WAIT_POLICY "
                   "or GOMP_SPINCOUNT to override)")
    return _chosen


def wait_policy() -> str:
    """The description of what :func:`choose_wait_policy` decided in this process, for a log line."""
    return _chosen
