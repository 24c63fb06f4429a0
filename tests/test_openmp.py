"""Tests for satgan.openmp: the OpenMP wait policy chosen before torch loads, and the user's own kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from satgan.openmp import DEFAULT_POLICY, choose_wait_policy, wait_policy

SRC = Path(__file__).resolve().parents[1] / "src"


def test_a_short_spin_is_set_when_nothing_is():
    """No policy in the environment and torch not loaded yet: GOMP_SPINCOUNT becomes 10000, and the log says so."""
    env: dict[str, str] = {}
    said = choose_wait_policy(env, torch_loaded=False)
    assert env == {"GOMP_SPINCOUNT": "10000"} == dict([DEFAULT_POLICY]) and "GOMP_SPINCOUNT=10000" in said
    assert wait_policy() == said


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
