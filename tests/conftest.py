"""Shared fixtures: the repository root and the real imagery in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where dvc.yaml and params.yaml live)."""
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data with the real RSSCN7 tiles and odd files; skips when absent."""
    if not (SHARED_DATA / "rsscn7").is_dir():
        pytest.skip(f"real imagery not found at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def rsscn7_files(shared_data: Path) -> list[Path]:
    """All 280 real RSSCN7 JPEG tiles (400x400 RGB), sorted."""
    files = sorted((shared_data / "rsscn7").rglob("*.jpg"))
    assert files, f"no .jpg under {shared_data / 'rsscn7'}"
    return files


@pytest.fixture(scope="session")
def odd_dir(shared_data: Path) -> Path:
    """../shared/data/odd: real awkward inputs (16-bit, grayscale, 7-band, no-data)."""
    return shared_data / "odd"
