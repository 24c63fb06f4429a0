"""Tests for satgan.params: typed, frozen, validated params sections."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import yaml

from satgan.errors import ParamsError
from satgan.params import InvalidParam, from_mapping, load_section, params_hash


@dataclass(frozen=True)
class Inner:
    lr: float
    betas: tuple[float, float]


@dataclass(frozen=True)
class Section:
    mode: Literal["drop", "convert", "keep"]
    size: int
    enabled: bool
    name: str
    opt: Inner
    tags: tuple[str, ...]
    weights: str | None

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise InvalidParam("size", f"must be positive, got {self.size}")


GOOD = {
    "mode": "drop",
    "size": 64,
    "enabled": True,
    "name": "x",
    "opt": {"lr": 1, "betas": [0.5, 0.999]},
    "tags": ["a", "b"],
    "weights": None,
}


def _write(tmp_path: Path, section: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"sec": section}))
    return path


def test_valid_section_loads_typed_and_frozen(tmp_path):
    """A complete section becomes a frozen dataclass with converted types."""
    p = load_section("sec", Section, _write(tmp_path, GOOD))
    assert p.opt.lr == 1.0 and isinstance(p.opt.lr, float)
    assert p.opt.betas == (0.5, 0.999) and p.tags == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"mode": "maybe"}, "sec.mode: expected one of 'drop', 'convert', 'keep'"),
        ({"size": "64"}, "sec.size: expected an integer"),
        ({"size": True}, "sec.size: expected an integer"),
        ({"enabled": 1}, "sec.enabled: expected true or false"),
        ({"opt": {"lr": 1, "betas": [0.5]}}, "sec.opt.betas: expected a list of 2 items"),
        ({"opt": {"lr": "fast", "betas": [0.5, 0.9]}}, "sec.opt.lr: expected a number"),
        ({"size": -1}, "sec.size: must be positive, got -1"),
        ({"sizee": 3}, "sec.sizee: unknown key"),
    ],
)
def test_bad_value_error_names_file_and_key(tmp_path, patch, fragment):
    """Every kind of bad value is refused with the file and dotted key in the message."""
    path = _write(tmp_path, {**GOOD, **patch})
    with pytest.raises(ParamsError) as info:
        load_section("sec", Section, path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_missing_key_is_refused(tmp_path):
    """A key absent from params.yaml is an error, never a silent default."""
    section = dict(GOOD)
    del section["name"]
    with pytest.raises(ParamsError, match=r"sec\.name: missing key"):
        load_section("sec", Section, _write(tmp_path, section))


def test_missing_section_and_file(tmp_path):
    """A missing section or params file is a ParamsError naming it."""
    with pytest.raises(ParamsError, match="missing section 'other'"):
        load_section("other", Section, _write(tmp_path, GOOD))
    with pytest.raises(ParamsError, match="file not found"):
        load_section("sec", Section, tmp_path / "nope.yaml")


def test_params_hash_is_stable_and_sensitive():
    """Equal sections hash equal; any change changes the hash."""
    a = from_mapping(Section, GOOD, "sec")
    b = from_mapping(Section, dict(GOOD), "sec")
    c = from_mapping(Section, {**GOOD, "size": 65}, "sec")
    assert params_hash(a) == params_hash(b) != params_hash(c)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float_names_the_key(tmp_path, bad):
    """NaN and +-inf are refused for every float field, naming the key."""
    with pytest.raises(ParamsError, match=r"sec\.opt\.lr: expected a finite number, got float"):
        load_section("sec", Section, _write(tmp_path, {**GOOD, "opt": {"lr": bad, "betas": [0.5, 0.9]}}))


def test_check_helper_wording():
    """check() raises InvalidParam naming the field with 'expected ..., got ...'."""
    from satgan.params import check

    check("size", True, ">= 1", 0)
    with pytest.raises(InvalidParam, match=r"^size: expected >= 1, got 0$"):
        check("size", False, ">= 1", 0)
