"""Tests for satgan.params: typed, frozen, validated params sections."""

from __future__ import annotations

import copy
import dataclasses
import re
import subprocess
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from satgan.download import DownloadParams
from satgan.errors import ParamsError
from satgan.params import (
    InvalidParam,
    changed_from_defaults,
    from_mapping,
    load_section,
    params_hash,
    read_params_file,
)
from satgan.prepare import PrepareParams
from satgan.validate import ValidateParams


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


@pytest.mark.parametrize(("text", "line", "column"), [
    ("download:\n  source: xyz\n   bad: [1, 2\n", 3, 7),   # a mapping inside a scalar
    ('a: "unterminated\nb: 1\n', 3, 1),                   # a quoted string never closed
    ("a:\n\t- 1\n", 2, 1),                                 # a tab where indentation is expected
])
def test_yaml_syntax_error_is_one_line_naming_file_line_column(tmp_path, text, line, column):
    """A YAML syntax error is one line naming the file, line and column (not PyYAML's 5-8 lines)."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as info:
        read_params_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line {line}, column {column}: not valid YAML: ")
    assert "\n" not in message and "<unicode string>" not in message


def test_non_utf8_params_file_is_a_params_error(tmp_path):
    """A params file that is not UTF-8 is one ParamsError line naming it, not a UnicodeDecodeError."""
    path = tmp_path / "params.yaml"
    path.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: not UTF-8 text"):
        read_params_file(path)


# --- every numeric key of the data sections: NaN, +-inf, huge and wrong types name the key -------

DATA_SECTIONS = [("download", DownloadParams), ("validate", ValidateParams), ("prepare", PrepareParams)]


def numeric_keys(cls: type, prefix: str) -> list[tuple[str, ...]]:
    """Dotted paths (as tuples) of every int/float/number-list/number-Literal field, nested dataclasses included."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += [(f.name, *k) for k in numeric_keys(tp, f"{prefix}.{f.name}")]
            continue
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        literal_numbers = typing.get_origin(tp) is Literal and all(type(a) is int for a in typing.get_args(tp))
        if literal_numbers or any(a in (int, float) for a in args) or (
                typing.get_origin(tp) is tuple and set(typing.get_args(tp)) - {Ellipsis} <= {int, float}):
            keys.append((f.name,))
    return keys


SECTION_KEYS = [(section, cls, key) for section, cls in DATA_SECTIONS for key in numeric_keys(cls, section)]
BAD_VALUES = st.sampled_from([
    float("nan"), float("inf"), float("-inf"), 1e300, -1e300, 10**30, -(10**30),
    "abc", "1", True, None, [], [1.0], {"a": 1}, [float("nan")] * 4, [10**30] * 4,
])


def test_numeric_keys_cover_the_sections():
    """The generator finds the keys this test is about (so an empty list cannot pass silently)."""
    found = {".".join((section, *key)) for section, _, key in SECTION_KEYS}
    assert {"download.http.timeout_s", "download.http.backoff_s", "download.xyz.bbox", "download.folder.max_file_bytes",
            "download.archive.timeout_s", "validate.max_cloud_fraction", "prepare.holdout_fraction",
            "prepare.image_size"} <= found


@pytest.fixture(scope="module")
def repo_params(repo_root) -> dict:
    """The repository's params.yaml, parsed once."""
    return read_params_file(repo_root / "params.yaml")


@pytest.mark.parametrize(("section", "cls", "key"), SECTION_KEYS, ids=[".".join((s, *k)) for s, _, k in SECTION_KEYS])
@settings(max_examples=16, deadline=None)
@given(bad=BAD_VALUES)
def test_bad_numeric_value_is_one_line_naming_the_key(repo_params, section, cls, key, bad):
    """NaN, +-inf, huge values and wrong types for every numeric key give one ParamsError line naming that key."""
    doc = copy.deepcopy(repo_params[section])
    node = doc
    for part in key[:-1]:
        node = node[part]
    if bad is None and typing.get_type_hints(_nested(cls, key[:-1]))[key[-1]] == float | None:
        bad = float("nan")  # null is a valid value for an optional key
    node[key[-1]] = bad
    with pytest.raises(ParamsError) as info:
        from_mapping(cls, doc, key=section, file="params.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert re.match(rf"params\.yaml: {re.escape('.'.join((section, *key)))}(\[\d+\])?: expected ", message), message


def _nested(cls: type, path: tuple[str, ...]) -> type:
    """The dataclass type at ``path`` below ``cls``."""
    for part in path:
        cls = typing.get_type_hints(cls)[part]
    return cls


# ----------------------------------------------------------------- YAML 1.2, duplicates, typos, seeds


@dataclass(frozen=True)
class Seeded:
    seed: int
    lr_g: float
    iterations: int


def _write_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, value", [("2e-4", 2e-4), ("1e23", 1e23), ("-1.5E+3", -1500.0), (".5", 0.5), ("3", 3.0)])
def test_yaml_12_floats_without_a_dot_are_numbers(tmp_path, text, value):
    """`lr_g: 2e-4` reads as the number 2e-4 (YAML 1.2, as DVC reads it), not the string '2e-4'."""
    path = _write_text(tmp_path, f"sec:\n  seed: 0\n  lr_g: {text}\n  iterations: 5\n")
    assert load_section("sec", Seeded, path).lr_g == value


@pytest.mark.parametrize("text, value", [("yes", "yes"), ("on", "on"), ("010", 10), ("0o17", 15), ("0x1f", 31),
                                         ("1:20", "1:20"), ("2024-01-01", "2024-01-01"), ("True", True), ("~", None)])
def test_yaml_12_core_schema_scalars(text, value):
    """Scalars resolve as in the YAML 1.2 core schema: no yes/on booleans, no 1.1 octal, sexagesimal or dates."""
    from satgan.params import parse_yaml

    assert parse_yaml(f"k: {text}\n") == {"k": value}


def test_float_for_an_integer_key_is_refused_naming_the_key(tmp_path):
    """`iterations: 1e23` is a float now, and an integer key still refuses it, naming the key."""
    path = _write_text(tmp_path, "sec:\n  seed: 0\n  lr_g: 0.1\n  iterations: 1e23\n")
    with pytest.raises(ParamsError, match=r"sec\.iterations: expected an integer, got float 1e\+23"):
        load_section("sec", Seeded, path)


def test_quoted_number_gets_a_hint(tmp_path):
    """A quoted number for a float key says it is quoted."""
    path = _write_text(tmp_path, "sec:\n  seed: 0\n  lr_g: '2e-4'\n  iterations: 5\n")
    with pytest.raises(ParamsError, match=r"sec\.lr_g: expected a number \(it is quoted"):
        load_section("sec", Seeded, path)


def test_duplicate_key_is_refused_naming_key_and_lines(tmp_path):
    """A key written twice is refused with the key, its line and the first one's line."""
    path = _write_text(tmp_path, "sec:\n  seed: 0\n  lr_g: 0.1\n  iterations: 5\n  lr_g: 0.2\n")
    with pytest.raises(ParamsError) as info:
        read_params_file(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert re.search(r"params\.yaml: line 5, column 3: .*duplicate key 'lr_g' \(first at line 3\)", msg), msg


def test_duplicate_section_is_refused(tmp_path):
    """A section written twice at the top level is refused too."""
    path = _write_text(tmp_path, "sec:\n  seed: 0\nsec:\n  seed: 1\n")
    with pytest.raises(ParamsError, match="duplicate key 'sec'"):
        read_params_file(path)


def test_merge_key_may_be_overridden(tmp_path):
    """`<<: *anchor` followed by a key it also holds is an override, not a duplicate."""
    from satgan.params import parse_yaml

    assert parse_yaml("a: &x {k: 1, j: 2}\nb:\n  <<: *x\n  k: 3\n")["b"] == {"k": 3, "j": 2}


def test_unknown_key_suggests_the_closest(tmp_path):
    """A typo'd key is refused with "did you mean" the closest known key."""
    path = _write_text(tmp_path, "sec:\n  seed: 0\n  lr_gg: 0.1\n  iterations: 5\n")
    with pytest.raises(ParamsError, match=r"sec\.lr_gg: unknown key \(did you mean 'lr_g'\?"):
        load_section("sec", Seeded, path)


@pytest.mark.parametrize("seed", ["-1", "9223372036854775808", "100000000000000000000000"])
def test_seed_out_of_range_is_refused_in_any_section(tmp_path, seed):
    """A key named seed outside 0..2**63-1 is refused naming it, whatever the section."""
    path = _write_text(tmp_path, f"sec:\n  seed: {seed}\n  lr_g: 0.1\n  iterations: 5\n")
    with pytest.raises(ParamsError, match=r"sec\.seed: expected an integer seed in 0\.\.2\*\*63-1"):
        load_section("sec", Seeded, path)


def test_seed_float_is_refused(tmp_path):
    """`seed: 1e23` is a float and is refused as the integer key it is."""
    path = _write_text(tmp_path, "sec:\n  seed: 1e23\n  lr_g: 0.1\n  iterations: 5\n")
    with pytest.raises(ParamsError, match=r"sec\.seed: expected an integer"):
        load_section("sec", Seeded, path)


@settings(deadline=None)
@given(st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([-1, 0, 2**63 - 1, 2**63]))
def test_seed_arg_accepts_exactly_the_seed_range(value):
    """`--seed` takes exactly 0..2**63-1, and torch.manual_seed accepts every value it takes."""
    import argparse

    import torch

    from satgan.params import SEED_MAX, seed_arg

    if 0 <= value <= SEED_MAX:
        assert seed_arg(str(value)) == value
        torch.Generator().manual_seed(value)
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="0..2\\*\\*63-1"):
            seed_arg(str(value))


def test_params_yaml_is_in_the_form_dvc_exp_run_writes_back(tmp_path):
    """`dvc exp run -S evaluate.seed=8` changes exactly one line of the shipped params.yaml (it is already in DVC's round-trip form)."""
    import difflib
    import shutil

    from dvc.utils.hydra import apply_overrides

    copy = tmp_path / "params.yaml"
    shutil.copyfile(Path(__file__).resolve().parents[1] / "params.yaml", copy)
    before = copy.read_text().splitlines()
    apply_overrides(str(copy), ["evaluate.seed=8"])
    changed = [line for line in difflib.unified_diff(before, copy.read_text().splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert len(changed) == 2 and changed[0].startswith("-  seed: ") and changed[1].startswith("+  seed: 8")


def _committed(folder: Path, text: str) -> Path:
    """``folder``/params.yaml holding ``text``, committed in a new git repo there."""
    (folder / "params.yaml").write_text(text)
    for cmd in (["git", "init", "-q"], ["git", "add", "params.yaml"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "defaults"]):
        subprocess.run(cmd, cwd=folder, check=True)
    return folder / "params.yaml"


def test_changed_from_defaults_lists_each_key_that_differs_from_the_committed_file(tmp_path):
    """Changed, added and removed keys against params.yaml at HEAD, as key=value in file order; 2e-4 equals 0.0002."""
    path = _committed(tmp_path, "train:\n  lr_g: 2e-4\n  iterations: 700\n  hacks:\n    ema: {enabled: true}\n  old: 1\n")
    assert changed_from_defaults(path) == []
    path.write_text("train:\n  lr_g: 0.0002\n  iterations: 300\n  hacks:\n    ema: {enabled: false}\n  new: [1, 2]\n")
    assert changed_from_defaults(path) == ["train.iterations=300", "train.hacks.ema.enabled=false", "train.new=[1, 2]",
                                           "train.old: removed"]


def test_changed_from_defaults_is_none_with_nothing_to_compare(tmp_path):
    """Outside git, or a params file never committed, there are no defaults to compare with: None, not an error."""
    (tmp_path / "params.yaml").write_text("train: {iterations: 3}\n")
    assert changed_from_defaults(tmp_path / "params.yaml") is None
    _committed(tmp_path, "train: {iterations: 3}\n")
    (tmp_path / "other.yaml").write_text("train: {iterations: 3}\n")
    assert changed_from_defaults(tmp_path / "other.yaml") is None
