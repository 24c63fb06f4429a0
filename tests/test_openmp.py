"""Tests for satgan.openmp: the wait policy and thread placement chosen before torch loads, the user's own kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from satgan.openmp import (
    BIND_POLICY,
    DEFAULT_POLICY,
    bind_for_training,
    bind_process,
    bind_threads,
    choose_wait_policy,
    cpu_threads,
    wait_policy,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def test_the_default_spin_is_set_when_nothing_is():
    """No policy in the environment and torch not loaded yet: GOMP_SPINCOUNT becomes 100000, and the log says so."""
    env: dict[str, str] = {}
    said = choose_wait_policy(env, torch_loaded=False)
    assert env == {"GOMP_SPINCOUNT": "100000"} == dict([DEFAULT_POLICY]) and "GOMP_SPINCOUNT=100000" in said
    assert wait_policy().startswith(said)


def test_a_policy_the_user_set_is_kept():
    """Any of OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME set by the user: nothing changes, the log names it."""
    for key, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "300000"), ("KMP_BLOCKTIME", "0")):
        env = {key: value}
        said = choose_wait_policy(env, torch_loaded=False)
        assert env == {key: value} and f"{key}={value}" in said


def test_nothing_is_set_once_torch_is_loaded():
    """torch (and OpenMP) already loaded: a change would not take effect, so none is made, and the log says why."""
    env: dict[str, str] = {}
    said = choose_wait_policy(env, torch_loaded=True)
    assert env == {} and "imported before satgan" in said


def test_importing_satgan_first_sets_the_policy_before_torch_loads():
    """In a fresh process, `import satgan` sets the short spin before torch is imported (every entry point imports it
    first)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env["PYTHONPATH"] = str(SRC)
    code = "import sys, os, satgan; print('torch' in sys.modules, os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", DEFAULT_POLICY[1]]


def test_cpu_threads_explicit_or_all_cores_but_one(monkeypatch):
    """threads > 0 is taken as is; 0 uses all cores but one on >2-core machines, split between local ranks."""
    assert cpu_threads(3, 1) == 3
    monkeypatch.setattr("os.cpu_count", lambda: 9)
    assert cpu_threads(0, 1) == 8 and cpu_threads(0, 2) == 4
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert cpu_threads(0, 1) == 2


def test_two_or_more_threads_are_bound_one_per_core():
    """A 2-thread training process, torch not loaded, nothing set: OMP_PROC_BIND=true and OMP_PLACES=cores, logged."""
    env: dict[str, str] = {}
    said = bind_threads(2, env, torch_loaded=False, cpus=2)
    assert env == dict(BIND_POLICY) and "bound one per core" in said and said in wait_policy()


def test_one_thread_or_too_few_cpus_or_torch_loaded_binds_nothing():
    """1 thread (nothing to place), more threads than allowed CPUs, or torch already loaded: the environment is left."""
    for threads, loaded, cpus, words in ((1, False, 2, ""), (2, False, 1, "2 threads on 1 allowed CPUs"),
                                         (2, True, 2, "torch was imported first")):
        env: dict[str, str] = {}
        said = bind_threads(threads, env, torch_loaded=loaded, cpus=cpus)
        assert env == {} and words in said and (said or threads == 1)


def test_a_placement_the_user_set_is_kept():
    """OMP_PROC_BIND, OMP_PLACES, GOMP_CPU_AFFINITY or KMP_AFFINITY set by the user: kept, and named in the log."""
    for key, value in (("OMP_PROC_BIND", "false"), ("OMP_PLACES", "threads"), ("GOMP_CPU_AFFINITY", "0-1"),
                       ("KMP_AFFINITY", "compact")):
        env = {key: value}
        said = bind_threads(2, env, torch_loaded=False, cpus=4)
        assert env == {key: value} and f"{key}={value}" in said


def test_the_train_stage_binds_only_a_single_process_job(tmp_path, monkeypatch):
    """bind_for_training reads train.threads/nproc: binds for nproc 1, not for DDP, and leaves a bad file to the loader."""
    monkeypatch.setattr("satgan.openmp.bind_threads", lambda threads, *a, **k: f"bind {threads}")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  threads: 2\n  nproc: 1\n", encoding="utf-8")
    assert bind_for_training(params) == "bind 2"
    params.write_text("train:\n  threads: 2\n  nproc: 2\n", encoding="utf-8")
    assert bind_for_training(params) == ""
    for bad in ("train: [", "train:\n  threads: two\n  nproc: 1\n", "other: {}\n"):
        params.write_text(bad, encoding="utf-8")
        assert bind_for_training(params) == ""
    assert bind_for_training(tmp_path / "missing.yaml") == ""


def test_bind_process_binds_a_lone_process_but_not_a_torchrun_rank(monkeypatch):
    """bind_process binds a single process's threads and leaves torchrun ranks and nproc > 1 unbound."""
    monkeypatch.setattr("satgan.openmp.bind_threads", lambda threads, *a, **k: f"bind {threads}")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert bind_process(2) == "bind 2" and bind_process(2, nproc=2) == ""
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert bind_process(2) == ""
