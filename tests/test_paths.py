"""Tests for satgan.paths: params.yaml's paths section as a typed section."""

from __future__ import annotations

import pytest
import yaml

from satgan.errors import ParamsError
from satgan.params import load_section
from satgan.paths import PathsParams


def test_shipped_paths_load(repo_root):
    """params.yaml's paths section loads, with every stage folder."""
    paths = load_section("paths", PathsParams, repo_root / "params.yaml")
    assert (paths.model, paths.samples, paths.eval) == ("data/model", "data/samples", "data/eval")


@pytest.mark.parametrize(("patch", "fragment"), [
    ({"eval": ""}, "paths.eval: expected a folder path, got ''"),
    ({"samples": 3}, "paths.samples: expected a string"),
    ({"extra": "x"}, "paths.extra: unknown key"),
])
def test_bad_paths_name_the_key(tmp_path, repo_root, patch, fragment):
    """An empty, mistyped or unknown path is refused naming the file and key."""
    doc = yaml.safe_load((repo_root / "params.yaml").read_text())
    doc["paths"].update(patch)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ParamsError, match=fragment):
        load_section("paths", PathsParams, path)
