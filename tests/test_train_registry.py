"""Tests for satgan.train.registry: the one hack list agrees with TrainHacks, params.yaml and README's table."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import yaml

from satgan.params import load_section
from satgan.train import TrainParams
from satgan.train.params import TrainHacks
from satgan.train.registry import GROUPS, HACKS, hacks_on, markdown_table, readme_table, with_table
from train_helpers import REPO


def test_registry_lists_every_trainhacks_field_in_order():
    """One registry entry per TrainHacks field, same names, same order."""
    assert [h.name for h in HACKS] == [f.name for f in dataclasses.fields(TrainHacks)]


def test_params_yaml_hack_keys_match_the_registry():
    """params.yaml's train.hacks has exactly the registry's keys, in its order."""
    hacks = yaml.safe_load((REPO / "params.yaml").read_text())["train"]["hacks"]
    assert list(hacks) == [h.name for h in HACKS]


def test_default_on_is_what_params_yaml_ships():
    """Each hack's default_on equals its switch in the shipped params.yaml."""
    shipped = load_section("train", TrainParams, REPO / "params.yaml").hacks
    assert [h.name for h in hacks_on(shipped)] == [h.name for h in HACKS if h.default_on]


def test_params_key_points_at_a_boolean_switch():
    """Every hack's params_key names a boolean in params.yaml (what `dvc exp run -S key=false` sets)."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    for h in HACKS:
        node = doc
        for part in h.params_key.split("."):
            node = node[part]
        assert isinstance(node, bool), h.params_key


def test_hacks_are_listed_group_by_group_in_the_groups_order():
    """Each hack's group is a key of GROUPS, every group has hacks, and HACKS lists them group by group in GROUPS' order."""
    kinds = list(GROUPS)
    assert {h.group for h in HACKS} == set(kinds)
    assert [h.group for h in HACKS] == sorted((h.group for h in HACKS), key=kinds.index)


def test_params_yaml_heads_each_group_with_its_comment_line():
    """Under train.hacks, each group's keys follow exactly one comment line `# <kind>: <GROUPS[kind]>`."""
    lines = (REPO / "params.yaml").read_text(encoding="utf-8").splitlines()
    start = lines.index(next(ln for ln in lines if ln.startswith("  hacks:")))
    block = []
    for ln in lines[start + 1:]:
        if not ln.startswith("    "):
            break
        block.append(ln)
    seen: dict[str, list[str]] = {}
    for ln in block:
        if ln.startswith("    # "):
            kind, _, why = ln.removeprefix("    # ").partition(": ")
            assert GROUPS.get(kind) == why, ln
            seen[kind] = []
        elif not ln.startswith("     "):  # a hack's own key (its settings are indented deeper)
            seen[list(seen)[-1]].append(ln.split(":")[0].strip())
    assert seen == {kind: [h.name for h in HACKS if h.group == kind] for kind in GROUPS}


def test_a_switch_is_bare_without_settings_and_enabled_only_with_them():
    """A hack (or a nested one such as diffaugment.ada) is true/false when it has no settings, else `enabled` plus settings."""
    def check(key: str, node: object) -> None:
        if isinstance(node, dict):
            assert isinstance(node.get("enabled"), bool) and len(node) > 1, f"{key}: `enabled` and at least one setting"
            for k, v in node.items():
                if isinstance(v, dict):
                    check(f"{key}.{k}", v)
        else:
            assert isinstance(node, bool), f"{key}: a bare true/false"

    for name, node in yaml.safe_load((REPO / "params.yaml").read_text())["train"]["hacks"].items():
        check(name, node)


def test_readme_table_is_the_generated_one():
    """README's hack table equals markdown_table() (regenerate: python -m satgan.train.registry --readme README.md)."""
    assert readme_table((REPO / "README.md").read_text(encoding="utf-8")) == markdown_table()


def test_every_hack_has_a_source_and_a_description():
    """No row of the table is empty: each hack says what it does and where it comes from."""
    assert all(h.source.strip() and h.description.strip() and "|" not in h.description + h.source for h in HACKS)


def test_with_table_rewrites_only_between_the_markers():
    """with_table replaces a stale table and leaves the text around the markers alone."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    stale = text.replace(markdown_table(), "| stale |")
    assert stale != text and with_table(stale) == text


def test_cli_prints_the_table():
    """`python -m satgan.train.registry --markdown` prints the table, without warnings."""
    proc = subprocess.run([sys.executable, "-m", "satgan.train.registry", "--markdown"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == markdown_table() and proc.stderr == ""
