"""Tests for satgan.turing: the mixed set, its key, the quiz page in Chromium, and HYPE scoring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from satgan.errors import DataError
from satgan.turing import (
    ANSWERS_FORMAT,
    hype_infinity,
    label_hash,
    make_key,
    make_turing_set,
    score_files,
    write_turing_test,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _tiles(files: list[Path], size: int = 32) -> np.ndarray:
    """Real JPEGs -> (N, 3, size, size) float32 in [-1, 1]."""
    out = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR), np.float32) for f in files]
    return np.stack(out).transpose(0, 3, 1, 2) / 127.5 - 1.0


@pytest.fixture(scope="module")
def real_fake(rsscn7_files):
    """7 real tiles and 7 stand-in 'fakes' (other real tiles, mirrored): only the labels matter here."""
    tiles = _tiles(rsscn7_files[::20][:14])
    return tiles[:7], np.flip(tiles[7:], axis=-1).copy()


@pytest.fixture(scope="module")
def quiz_dir(tmp_path_factory, real_fake):
    """A written Turing test (grid, key, quiz page) over 5 real and 6 fake tiles."""
    out = tmp_path_factory.mktemp("eval")
    write_turing_test(real_fake[0], real_fake[1], out, n_real=5, n_fake=6, nrow=4, seed=3)
    return out


def test_turing_set_is_seeded_and_mixed(real_fake):
    """The same seed gives the same order; the set has the asked-for counts of each label."""
    a = make_turing_set(*real_fake, n_real=5, n_fake=6, seed=1)
    b = make_turing_set(*real_fake, n_real=5, n_fake=6, seed=1)
    assert a.labels == b.labels and np.array_equal(a.images, b.images)
    assert a.labels.count("real") == 5 and a.labels.count("fake") == 6


def test_too_many_tiles_is_a_clear_error(real_fake):
    """Asking for more real tiles than the holdout has names both counts."""
    with pytest.raises(DataError, match="asked for 50 real"):
        make_turing_set(*real_fake, n_real=50, n_fake=2, seed=0)


def test_grid_and_key_match(quiz_dir):
    """The grid PNG exists and the key lists every tile with its label and grid cell."""
    key = json.loads((quiz_dir / "turing_key.json").read_text())
    assert len(key["tiles"]) == 11 and {t["label"] for t in key["tiles"]} == {"real", "fake"}
    assert key["tiles"][5]["row"] == 1 and key["tiles"][5]["col"] == 1
    assert Image.open(quiz_dir / "turing_grid.png").size == (4 * 34 + 2, 3 * 34 + 2)


def test_quiz_page_hides_labels(quiz_dir):
    """The page holds label hashes, never the key's labels, and loads nothing from the network."""
    html = (quiz_dir / "quiz.html").read_text()
    key = json.loads((quiz_dir / "turing_key.json").read_text())
    assert '"label"' not in html and "source_index" not in html
    t = key["tiles"][0]
    assert label_hash(key["salt"], key["quiz_id"], t["id"], t["label"]) in html
    assert "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") == 11


def test_hype_counts_real_and_fake_errors_separately():
    """Answering 'real' to everything gives 50% overall, 0% on real and 100% on fake."""
    is_real = np.array([True, False] * 10)
    correct = is_real.copy()  # said "real": right exactly on the real tiles
    res = hype_infinity([(correct, is_real)], n_boot=200, seed=0)
    assert res["hype_infinity"] == 0.5 and res["error_on_real"] == 0.0 and res["error_on_fake"] == 1.0
    assert res["ci95"][0] < 0.5 < res["ci95"][1]


def test_answers_for_another_quiz_are_refused(quiz_dir, tmp_path):
    """An answers file whose quiz_id differs from the key's is a DataError."""
    ans = tmp_path / "a.json"
    ans.write_text(json.dumps({"format": ANSWERS_FORMAT, "quiz_id": "other", "answers": {"t000": "real"}}))
    with pytest.raises(DataError, match="answers are for quiz 'other'"):
        score_files([ans], quiz_dir / "turing_key.json", n_boot=100, seed=0)


def test_make_key_is_reproducible(real_fake):
    """Same tiles and seed give the same salt and quiz id (DVC-reproducible outputs)."""
    ts = make_turing_set(*real_fake, n_real=3, n_fake=3, seed=0)
    assert make_key(ts, 0, 3) == make_key(ts, 0, 3)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (see .ci/run)")
def test_quiz_in_headless_chromium_scores_with_cli(quiz_dir, tmp_path):
    """Answer every tile in real Chromium, read the score, export the answers, score them with the CLI."""
    from playwright.sync_api import sync_playwright

    key = json.loads((quiz_dir / "turing_key.json").read_text())
    # Answer the first 4 tiles right and the rest "real": a known number of correct answers.
    plan = {t["id"]: (t["label"] if i < 4 else "real") for i, t in enumerate(key["tiles"])}
    expected_right = sum(plan[t["id"]] == t["label"] for t in key["tiles"])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto((quiz_dir / "quiz.html").as_uri())
        assert page.locator("#finish").is_disabled()
        for tid, answer in plan.items():
            page.click(f"#tile-{tid} button[data-answer={answer}]")
        page.click("#finish")
        correct = int(page.locator("#score").get_attribute("data-correct"))
        exported = page.locator("#answers-json").text_content()
        href = page.locator("#download").get_attribute("href")
        browser.close()
    assert correct == expected_right
    assert href.startswith("data:application/json")
    answers = tmp_path / "answers.json"
    answers.write_text(exported)
    proc = subprocess.run(
        [sys.executable, "-m", "satgan.turing", "score", str(answers), "--key", str(quiz_dir / "turing_key.json"),
         "--bootstrap", "200"],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    result = json.loads(proc.stdout)
    assert result["hype_infinity"] == pytest.approx(1 - correct / len(plan))
    assert result["n_answers"] == len(plan)
