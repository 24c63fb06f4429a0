"""Tests for satgan.train.precision: which numeric path a run takes, that the trainer takes it, and that bf16 reruns stay bit-identical."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from satgan.train import train
from satgan.train.precision import choose_precision, cpu_flags, native_cpu_bf16
from train_helpers import assert_same_weights, run_dirs, tiny_params, trainer, write_tiles

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize(("cpu_bf16", "native", "bf16"), [
    ("auto", "avx512_bf16", True), ("auto", None, False), ("on", None, True), ("off", "amx_bf16", False),
])
def test_cpu_path_follows_cpu_bf16_and_the_hardware(cpu_bf16, native, bf16):
    """auto: bf16 exactly where bf16 is native; on/off force it; channels_last either way; the reason names the choice."""
    prec = choose_precision(CPU, amp=True, cpu_bf16=cpu_bf16, channels_last=False, detect=lambda: native)
    assert (prec.autocast_device == "cpu") == bf16 and prec.channels_last
    assert f"cpu_bf16={cpu_bf16}" in prec.describe() and prec.describe().startswith("bf16" if bf16 else "fp32")


def test_cuda_path_follows_amp_and_channels_last_not_cpu_bf16():
    """On CUDA, amp and channels_last decide; cpu_bf16 is not consulted."""
    prec = choose_precision(CUDA, amp=True, cpu_bf16="off", channels_last=True, detect=lambda: pytest.fail("probed"))
    assert prec.autocast_device == "cuda" and prec.channels_last
    assert choose_precision(CUDA, amp=False, cpu_bf16="on", channels_last=False).autocast_device is None


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    """cpu_flags parses the flags line of a cpuinfo file; a missing file gives no flags."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\nbogomips\t: 5000\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_native_bf16_needs_one_of_the_bf16_flags():
    """avx512_bf16 or amx_bf16 make bf16 native; AVX-512 alone does not."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch built without oneDNN: bf16 is never native")
    assert native_cpu_bf16({"avx512f", "avx512_bf16"}) == "avx512_bf16"
    assert native_cpu_bf16({"avx512f", "amx_bf16", "amx_tile"}) == "amx_bf16"
    assert native_cpu_bf16({"avx512f", "avx2"}) is None


def test_trainer_runs_the_chosen_path():
    """cpu_bf16=on: G's fakes come out of autocast in bf16; off: fp32; the nets are channels_last either way."""
    for mode, dtype in (("on", torch.bfloat16), ("off", torch.float32)):
        tr = trainer(tiny_params(cpu_bf16=mode))
        with tr.amp():
            fake = tr.g(tr.latent())
        weight = next(m.weight for m in tr.d if isinstance(m, torch.nn.Conv2d))  # d[0] is HighPass (no weight)
        assert fake.dtype == dtype
        assert weight.is_contiguous(memory_format=torch.channels_last) and weight.dtype == torch.float32
        assert all(torch.isfinite(v).all() for v in tr.run_step().values())


@pytest.fixture(scope="module")
def tiles(tmp_path_factory, rsscn7_files) -> Path:
    """16 real RSSCN7 tiles at 32x32."""
    return write_tiles(tmp_path_factory.mktemp("prepared"), rsscn7_files[::16][:16])


def test_bf16_reruns_at_two_threads_are_bit_identical(tiles, tmp_path):
    """cpu_bf16=on with 2 threads: two runs, and a run resumed half-way, end with identical weights."""
    p = {"cpu_bf16": "on", "threads": 2}
    dirs = [run_dirs(tmp_path, n) for n in ("a", "b", "resumed")]
    for model, ck, _ in dirs[:2]:
        train(tiny_params(**p), tiles, model, ck, None)
    model, ck, _ = dirs[2]
    train(tiny_params(iterations=3, **p), tiles, model, ck, None)
    train(tiny_params(**p), tiles, model, ck, None)
    assert_same_weights(dirs[0][0], dirs[1][0])
    assert_same_weights(dirs[0][0], dirs[2][0])
