"""Typed, frozen, validated params sections loaded from params.yaml.

Each stage owns one frozen dataclass describing its section. :func:`load_section`
turns the YAML mapping into that dataclass and refuses, with a message naming the
file and the dotted key:

- a missing key (defaults live in params.yaml, never in code),
- an unknown key (usually a typo that would otherwise be silently ignored; the message
  suggests the closest known key, by :func:`difflib.get_close_matches`),
- a key written twice in one mapping (YAML keeps the last one silently; DVC refuses it),
- a value of the wrong type, or outside a ``Literal`` set of choices,
- a float that is NaN or infinite (no setting here means "unbounded"),
- a value rejected by the dataclass's own ``__post_init__`` check: call :func:`check`
  there, once per field, so every message names its own key with one wording
  ("expected ..., got ..."),
- a key named ``seed`` outside 0..2**63-1 (:func:`check_seed`: what every seeded RNG here,
  ``torch.manual_seed`` included, accepts), whichever section it is in.

The file is read as YAML 1.2 (core schema), as DVC reads it: ``2e-4`` and ``1e23`` are numbers
(YAML 1.1, PyYAML's default, reads a float without a dot as the string ``'2e-4'``), ``yes``/``on``
are strings, ``010`` is ten. An integer key stays strict: ``1e23`` for one is refused naming it.

Supported field types: ``bool``, ``int``, ``float`` (ints are accepted), ``str``,
``Literal[...]``, ``X | None``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]``
and nested frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import subprocess
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from satgan.errors import ParamsError

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


class InvalidParam(ValueError):
    """Raised from a params dataclass's ``__post_init__``: ``InvalidParam("field", "why")``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check(field: str, ok: bool, expected: str, got: Any) -> None:
    """The one range check for ``__post_init__``: unless ``ok``, raise ``InvalidParam(field, "expected ..., got ...")``.

    ``field`` is the key being checked (relative to its dataclass); ``got`` is its value.
    A check that relates two keys names the one it constrains, e.g.
    ``check("length", self.length < self.every, f"< every ({self.every})", self.length)``.
    """
    if not ok:
        raise InvalidParam(field, f"expected {expected}, got {got!r}")


SEED_MAX = 2**63 - 1  # torch.manual_seed, numpy's default_rng and random.seed all take 0..2**63-1


def seed_problem(value: Any) -> str | None:
    """Why ``value`` is not a seed (an int in 0..2**63-1), or None when it is one."""
    if not isinstance(value, int) or isinstance(value, bool):
        return f"expected an integer seed in 0..2**63-1, got {_describe(value)}"
    if not 0 <= value <= SEED_MAX:
        return f"expected an integer seed in 0..2**63-1, got {value}"
    return None


def check_seed(field: str, value: Any) -> None:
    """The one seed check for ``__post_init__`` (and, through :func:`from_mapping`, every key named ``seed``)."""
    problem = seed_problem(value)
    if problem is not None:
        raise InvalidParam(field, problem)


def seed_arg(text: str) -> int:
    """argparse ``type=`` for a ``--seed`` flag: an integer in 0..2**63-1, else argparse's one-line usage error."""
    import argparse

    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed in 0..2**63-1, got {text!r:.40}") from None
    problem = seed_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"expected an integer seed in 0..2**63-1, got {text:.40}")
    return value


# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), which DVC's ruamel.yaml
# reads params.yaml with. PyYAML implements YAML 1.1, whose float needs a dot (``2e-4`` is a string
# there), whose booleans include yes/no/on/off, whose ``010`` is octal and ``1:20`` sexagesimal.
_CORE_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_CORE_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_CORE_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_CORE_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                         r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema scalars and duplicate keys refused."""

    yaml_implicit_resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` may be overridden by the keys written next to it
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeConstructor says so with its own mark
                break
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"found duplicate key {key!r} (first at line {first.start_mark.line + 1}): "
                    "YAML keeps only the last one and DVC refuses the file; remove one", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep)

    def construct_core_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        if text.startswith("0o"):
            return int(text[2:], 8)
        return int(text, 16) if text.startswith("0x") else int(text, 10)

    def construct_core_float(self, node: yaml.ScalarNode) -> float:
        text = str(self.construct_scalar(node)).lower()
        if text.endswith(".inf"):
            return -math.inf if text.startswith("-") else math.inf
        return math.nan if text == ".nan" else float(text)

    def construct_core_bool(self, node: yaml.ScalarNode) -> bool:
        return str(self.construct_scalar(node)).lower() == "true"


for _tag, _pattern, _first in (("bool", _CORE_BOOL, "tTfF"), ("int", _CORE_INT, "-+0123456789"),
                               ("float", _CORE_FLOAT, "-+.0123456789"), ("null", _CORE_NULL, "~nN")):
    _Yaml12Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", _pattern, list(_first))
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:null", _CORE_NULL, [""])
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])
_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _Yaml12Loader.construct_core_int)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _Yaml12Loader.construct_core_float)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:bool", _Yaml12Loader.construct_core_bool)


def parse_yaml(text: str) -> Any:
    """``text`` parsed as YAML 1.2 (core schema) with duplicate keys refused (``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def read_params_file(path: str | Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """Parse a params YAML file into a mapping, with errors that name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the repository root)") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ParamsError(_yaml_error(path, exc)) from None
    if not isinstance(doc, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(doc).__name__}")
    return doc


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """One line naming the file, line and column: PyYAML's own text spans several lines,
    quotes a source excerpt and calls the file ``"<unicode string>"``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or problem is None:
        return f"{path}: not valid YAML: {' '.join(str(exc).split())}"
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    where = f" (line {context_mark.line + 1}, column {context_mark.column + 1})" if context_mark is not None else ""
    why = f"{problem} {context}{where}" if context else problem
    return f"{path}: line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {' '.join(why.split())}"


def _flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": value}`` in file order; lists and scalars are values."""
    if not isinstance(doc, dict):
        return {prefix: doc}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out.update(_flat(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return out


def _show(value: Any) -> str:
    """A params value as YAML writes it in flow style: ``true``, ``2e-04``, ``[1, 2]``, text unquoted."""
    return value if isinstance(value, str) else json.dumps(value)


def changed_from_defaults(path: str | Path = DEFAULT_PARAMS, rev: str = "HEAD") -> list[str] | None:
    """What the params file at ``path`` changes from the defaults: the same file as committed at ``rev`` (defaults
    live in params.yaml; under ``dvc exp run`` HEAD is the experiment's baseline and ``-S`` edits the workspace copy).

    One ``key=value`` per dotted key whose value differs, in file order (a key the committed file lacks
    included; one only the committed file has as ``key: removed``); [] when they agree. None when there is
    nothing to compare with: ``path`` unreadable or not valid YAML, outside git, or not committed at ``rev``.
    """
    path = Path(path)
    try:
        now = _flat(read_params_file(path))
        committed = subprocess.run(["git", "show", f"{rev}:./{path.name}"], cwd=path.parent, capture_output=True,
                                   text=True, timeout=10, check=True).stdout
        then = _flat(parse_yaml(committed))
    except (ParamsError, OSError, subprocess.SubprocessError, yaml.YAMLError):
        return None
    changed = [f"{key}={_show(value)}" for key, value in now.items() if key not in then or then[key] != value]
    return changed + [f"{key}: removed" for key in then if key not in now]


def load_section(section: str, cls: type[T], path: str | Path = DEFAULT_PARAMS) -> T:
    """Load ``section`` of the params file at ``path`` into the frozen dataclass ``cls``."""
    doc = read_params_file(path)
    if section not in doc:
        raise ParamsError(f"{path}: missing section '{section}'")
    return from_mapping(cls, doc[section], key=section, file=Path(path))


def from_mapping(cls: type[T], data: Any, key: str, file: str | Path = DEFAULT_PARAMS) -> T:
    """Build dataclass ``cls`` from ``data`` (a mapping); ``key`` is its dotted name for errors."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    if not isinstance(data, dict):
        raise ParamsError(f"{file}: {key}: expected a mapping, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted((set(data) - set(fields)), key=str)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), list(fields), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ParamsError(
            f"{file}: {key}.{unknown[0]}: unknown key ({hint}expected one of: {', '.join(sorted(fields))})"
        )
    missing = [name for name in fields if name not in data]
    if missing:
        raise ParamsError(f"{file}: {key}.{missing[0]}: missing key")
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints[name], data[name], f"{key}.{name}", file) for name in fields}
    try:
        for name in fields:
            if name == "seed" and values[name] is not None:  # every seed, in any section: one bound
                check_seed(name, values[name])
        return cls(**values)
    except InvalidParam as exc:
        raise ParamsError(f"{file}: {key}.{exc.field}: {exc.message}") from None


def params_hash(obj: Any) -> str:
    """A stable sha256 of a params dataclass (or nested plain data), for cards and resume checks."""
    plain = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    blob = json.dumps(plain, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(blob.encode()).hexdigest()


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def _convert(tp: Any, value: Any, key: str, file: str | Path) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> typing.NoReturn:
        raise ParamsError(f"{file}: {key}: expected {expected}, got {_describe(value)}")

    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            fail(" or ".join(_name(a) for a in args))
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for a in non_none:
            try:
                return _convert(a, value, key, file)
            except ParamsError as exc:
                errors.append(exc)
        fail(" or ".join(_name(a) for a in args))
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        fail("one of " + ", ".join(repr(a) for a in args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                fail("a finite number")
            return float(value)
        if isinstance(value, str) and _CORE_FLOAT.match(value.strip()):
            fail("a number (it is quoted: write it without quotes)")
        fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        fail("a string")
    if origin is tuple:
        if not isinstance(value, list):
            fail("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]", file) for i, v in enumerate(value))
        if len(value) != len(args):
            fail(f"a list of {len(args)} items")
        return tuple(_convert(a, v, f"{key}[{i}]", file) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            fail("a mapping")
        return {str(k): _convert(args[1], v, f"{key}.{k}", file) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, key, file)
    raise TypeError(f"unsupported params field type {tp!r} for {key}")


def _name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names[tp] if tp in names else str(tp)
