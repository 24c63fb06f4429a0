"""Tests for satgan.evaluate.turing: the per-quiz draw, its key, the quiz page in Chromium (both protocols),
HYPE scoring and its edge cases, and clear errors for foreign key and answers files."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from evaluate_helpers import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from satgan.arrays import save_array_with_sidecar
from satgan.errors import DataError
from satgan.evaluate.turing import (
    ANSWERS_FORMAT,
    derive_quiz_id,
    format_all,
    format_result,
    hype_infinity,
    label_hash,
    load_key,
    main,
    make_key,
    make_turing_set,
    score_by_protocol,
    score_files,
    write_turing_test,
)
from tiles import load_tiles


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _score_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "satgan.evaluate.turing", "score", *args], capture_output=True, text=True, env=_env())


@pytest.fixture(scope="module")
def real_fake(rsscn7_files):
    """7 real tiles and 7 stand-in 'fakes' (other real tiles, mirrored): only the labels matter here."""
    tiles = load_tiles(rsscn7_files[::20][:14])
    return tiles[:7], np.flip(tiles[7:], axis=-1).copy()


@pytest.fixture(scope="module")
def quiz_dir(tmp_path_factory, real_fake):
    """A written Turing test (grid, key, quiz page) over 5 real and 6 fake tiles."""
    out = tmp_path_factory.mktemp("eval")
    write_turing_test(real_fake[0], real_fake[1], out, n_real=5, n_fake=6, nrow=4, seed=3)
    return out


@pytest.fixture(scope="module")
def key(quiz_dir):
    return json.loads((quiz_dir / "turing_key.json").read_text())


def _answers(key: dict, plan: dict[str, str], mode: str = "single", exposure_ms: int | None = None) -> dict:
    return {"format": ANSWERS_FORMAT, "quiz_id": key["quiz_id"], "protocol": {"mode": mode, "exposure_ms": exposure_ms},
            "answers": plan}


def _write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


# ----------------------------------------------------------------- the draw


def test_turing_set_is_seeded_by_the_quiz_id_and_mixed(real_fake):
    """The same quiz id gives the same draw and order; the set has the asked-for counts of each label."""
    a = make_turing_set(*real_fake, n_real=5, n_fake=6, quiz_id="q1")
    b = make_turing_set(*real_fake, n_real=5, n_fake=6, quiz_id="q1")
    assert a.labels == b.labels and a.sources == b.sources and np.array_equal(a.images, b.images)
    assert a.labels.count("real") == 5 and a.labels.count("fake") == 6


def test_each_quiz_id_draws_other_tiles_or_positions(real_fake):
    """Different quiz ids give different draws, so one quiz's answers do not carry over to the next."""
    draws = {(s.labels, s.sources) for s in (make_turing_set(*real_fake, 3, 3, f"quiz{i}") for i in range(8))}
    assert len(draws) == 8


def test_quiz_id_follows_the_data_and_the_seed(real_fake):
    """A new model's samples or another seed give another quiz id; the same inputs give the same id."""
    real, fake = real_fake
    base = derive_quiz_id(real, fake, 0)
    assert derive_quiz_id(real, fake, 0) == base
    assert derive_quiz_id(real, fake[::-1].copy(), 0) != base
    assert derive_quiz_id(real, fake, 1) != base


def test_key_records_the_quiz_id_that_reproduces_the_draw(quiz_dir, real_fake, key):
    """Redrawing from the key's quiz id gives exactly the key's labels and source indices."""
    ts = make_turing_set(*real_fake, n_real=5, n_fake=6, quiz_id=key["quiz_id"])
    assert list(ts.labels) == [t["label"] for t in key["tiles"]]
    assert list(ts.sources) == [t["source_index"] for t in key["tiles"]]
    assert key["seed"] == 3 and key["quiz_id"] == derive_quiz_id(*real_fake, 3)


def test_too_many_tiles_is_a_clear_error(real_fake):
    """Asking for more real tiles than the holdout has names both counts."""
    with pytest.raises(DataError, match="asked for 50 real"):
        make_turing_set(*real_fake, n_real=50, n_fake=2, quiz_id="q")


def test_grid_and_key_match(quiz_dir, key):
    """The grid PNG exists and the key lists every tile with its label and grid cell."""
    assert len(key["tiles"]) == 11 and {t["label"] for t in key["tiles"]} == {"real", "fake"}
    assert key["tiles"][5]["row"] == 1 and key["tiles"][5]["col"] == 1
    assert Image.open(quiz_dir / "turing_grid.png").size == (4 * 34 + 2, 3 * 34 + 2)


def test_quiz_page_hides_labels(quiz_dir, key):
    """The page holds label hashes, never the key's labels, and loads nothing from the network."""
    html = (quiz_dir / "quiz.html").read_text()
    assert '"label"' not in html and "source_index" not in html
    t = key["tiles"][0]
    assert label_hash(key["salt"], key["quiz_id"], t["id"], t["label"]) in html
    assert "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") == 11


def test_make_key_is_reproducible(real_fake):
    """Same tiles and quiz id give the same key, salt included (DVC-reproducible outputs)."""
    ts = make_turing_set(*real_fake, n_real=3, n_fake=3, quiz_id="q")
    assert make_key(ts, "q", 3, 0) == make_key(ts, "q", 3, 0)


def test_make_command_draws_a_fresh_quiz(real_fake, tmp_path):
    """`turing make` without --quiz-id writes a quiz with a new random id from the pipeline's arrays."""
    save_array_with_sidecar(tmp_path / "holdout.npy", real_fake[0], {})
    save_array_with_sidecar(tmp_path / "samples.npy", real_fake[1], {})
    ids = []
    for i in range(2):
        out = tmp_path / f"quiz{i}"
        subprocess.run([sys.executable, "-m", "satgan.evaluate.turing", "make", "--holdout", str(tmp_path / "holdout.npy"),
                        "--samples", str(tmp_path / "samples.npy"), "--out", str(out), "--n-real", "3", "--n-fake", "3"],
                       check=True, capture_output=True, text=True, env=_env())
        k = load_key(out / "turing_key.json")
        assert (out / "quiz.html").is_file() and len(k["tiles"]) == 6 and k["seed"] is None
        ids.append(k["quiz_id"])
    assert ids[0] != ids[1]


# ----------------------------------------------------------------- scoring


def test_hype_counts_real_and_fake_errors_separately():
    """Answering 'real' to everything gives 50% overall, 0% on real and 100% on fake."""
    is_real = np.array([True, False] * 10)
    correct = is_real.copy()  # said "real": right exactly on the real tiles
    res = hype_infinity([(correct, is_real)], n_boot=200, seed=0)
    assert res["hype_infinity"] == 0.5 and res["error_on_real"] == 0.0 and res["error_on_fake"] == 1.0
    assert res["error_on_fake_ci95"] == [1.0, 1.0] and res["error_on_real_ci95"] == [0.0, 0.0]


def test_single_label_answers_are_flagged_and_left_out(key, tmp_path):
    """An all-'real' answer set is listed as uninformative and does not move the figures."""
    key_path = _write(tmp_path / "key.json", key)
    truth = {t["id"]: t["label"] for t in key["tiles"]}
    perfect = _write(tmp_path / "perfect.json", _answers(key, truth))
    lazy = _write(tmp_path / "lazy.json", _answers(key, {tid: "real" for tid in truth}))
    alone = score_files([perfect], key_path, 200, 0)
    both = score_files([perfect, lazy], key_path, 200, 0)
    assert [f["file"] for f in both["uninformative"]] == [str(lazy)] and both["uninformative"][0]["label"] == "real"
    for name in ("hype_infinity", "error_on_fake", "error_on_real", "n_answers"):
        assert both[name] == alone[name]
    assert both["hype_infinity"] == 0.0 and both["n_evaluators"] == 1 and both["n_answer_files"] == 2


def test_only_uninformative_answers_give_no_headline(key, tmp_path):
    """With nothing but single-label answer sets there is no error rate, and the reading says so."""
    key_path = _write(tmp_path / "key.json", key)
    lazy = _write(tmp_path / "lazy.json", _answers(key, {t["id"]: "fake" for t in key["tiles"]}))
    res = score_files([lazy], key_path, 200, 0)
    assert res["hype_infinity"] is None and res["error_on_fake"] is None and res["n_evaluators"] == 0
    assert "nothing can be concluded" in res["reading"]


def test_reading_says_people_can_tell_when_they_always_do(key, tmp_path):
    """Evaluators who classify every tile right get an error of 0 and a reading that they can tell."""
    key_path = _write(tmp_path / "key.json", key)
    truth = {t["id"]: t["label"] for t in key["tiles"]}
    files = [_write(tmp_path / f"p{i}.json", _answers(key, truth)) for i in range(3)]
    res = score_files(files, key_path, 200, 0)
    assert res["hype_infinity"] == 0.0 and "people can tell them apart" in res["reading"]


def test_reading_says_inconclusive_when_rates_overlap(key, tmp_path):
    """Answers unrelated to the labels (half of each class called real) read as 'not clearly different'."""
    key_path = _write(tmp_path / "key.json", key)
    reals = [t["id"] for t in key["tiles"] if t["label"] == "real"]
    fakes = [t["id"] for t in key["tiles"] if t["label"] == "fake"]
    plan = {tid: ("real" if i % 2 == 0 else "fake") for group in (reals, fakes) for i, tid in enumerate(group)}
    res = score_files([_write(tmp_path / "a.json", _answers(key, plan))], key_path, 500, 0)
    assert "not clearly different" in res["reading"]


def test_answers_on_one_class_only_leave_the_other_split_empty(key, tmp_path):
    """Answering only real tiles gives an error on reals and none on fakes, and says both are needed."""
    key_path = _write(tmp_path / "key.json", key)
    reals = [t["id"] for t in key["tiles"] if t["label"] == "real"]
    plan = {tid: ("real" if i else "fake") for i, tid in enumerate(reals)}
    res = score_files([_write(tmp_path / "a.json", _answers(key, plan))], key_path, 200, 0)
    assert res["error_on_fake"] is None and res["error_on_real"] == pytest.approx(1 / len(reals))
    assert "answer both" in res["reading"]


def test_mixed_protocols_are_not_pooled_by_score_files(key, tmp_path):
    """score_files, one protocol's scorer, refuses to pool answers given one at a time and on the grid."""
    key_path = _write(tmp_path / "key.json", key)
    plan = {t["id"]: ("real" if i % 2 else "fake") for i, t in enumerate(key["tiles"])}
    a = _write(tmp_path / "a.json", _answers(key, plan, "single"))
    b = _write(tmp_path / "b.json", _answers(key, plan, "grid"))
    with pytest.raises(DataError, match="different protocols"):
        score_files([a, b], key_path, 200, 0)


def test_mixed_protocols_are_each_scored_on_their_own(key, tmp_path):
    """`quiz score` given single and grid answers scores each protocol separately instead of stopping."""
    key_path = _write(tmp_path / "key.json", key)
    right = {t["id"]: t["label"] for t in key["tiles"]}
    half = {t["id"]: ("real" if i % 2 else "fake") for i, t in enumerate(key["tiles"])}
    a = _write(tmp_path / "a.json", _answers(key, right, "single"))
    b = _write(tmp_path / "b.json", _answers(key, half, "grid"))
    c = _write(tmp_path / "c.json", _answers(key, right, "single", 500))
    scored = score_by_protocol([b, a, c], key_path, 200, 0)
    protos = [(r["protocol"]["mode"], r["protocol"]["exposure_ms"]) for r in scored["by_protocol"]]
    assert protos == [("grid", None), ("single", None), ("single", 500)]
    assert scored["by_protocol"][1]["hype_infinity"] == 0.0 and scored["by_protocol"][1]["participants"] == [str(a)]
    proc = _score_cli(str(a), str(b), "--key", str(key_path), "--bootstrap", "100")
    assert proc.returncode == 0 and "2 protocols, each scored on its own" in proc.stdout, proc.stderr


def test_same_file_twice_is_counted_once(key, tmp_path):
    """The same export given twice (same bytes, even under another name) counts once, with a line saying so."""
    key_path = _write(tmp_path / "key.json", key)
    plan = {t["id"]: ("real" if i % 2 else "fake") for i, t in enumerate(key["tiles"])}
    a = _write(tmp_path / "a.json", _answers(key, plan))
    copy = tmp_path / "copy.json"
    copy.write_bytes(a.read_bytes())
    scored = score_by_protocol([a, a, copy], key_path, 100, 0)
    assert scored["by_protocol"][0]["n_answer_files"] == 1
    assert scored["duplicates"] == [{"file": str(a), "same_as": str(a)}, {"file": str(copy), "same_as": str(a)}]
    assert f"counted once: {copy} has the same content as {a}" in format_all(scored)


def test_participant_field_is_read_and_optional(key, tmp_path):
    """An export's participant names it in the result; an older export without the field still scores."""
    key_path = _write(tmp_path / "key.json", key)
    plan = {t["id"]: ("real" if i % 2 else "fake") for i, t in enumerate(key["tiles"])}
    named = _write(tmp_path / "answers-alice.json", {**_answers(key, plan), "participant": "alice"})
    old = _write(tmp_path / "answers.json", _answers(key, {**plan, key["tiles"][0]["id"]: "real"}))
    result = score_by_protocol([named, old], key_path, 100, 0)["by_protocol"][0]
    assert result["participants"] == ["alice", str(old)]
    bad = _write(tmp_path / "b.json", {**_answers(key, plan), "participant": ""})
    with pytest.raises(DataError, match="field 'participant': expected 1-64 characters"):
        score_by_protocol([bad], key_path, 100, 0)


@pytest.mark.parametrize("which", ["key", "answers"])
def test_fifo_key_or_answers_is_refused_not_waited_on(key, tmp_path, which):
    """A FIFO given as the key or an answers file is one DataError line, never a hang."""
    import os

    key_path = _write(tmp_path / "key.json", key)
    ans = _write(tmp_path / "a.json", _answers(key, {key["tiles"][0]["id"]: "real"}))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    args = ([ans], fifo) if which == "key" else ([fifo], key_path)
    with pytest.raises(DataError, match=r"fifo: .* refused: .*not a regular file \(a FIFO\)"):
        score_by_protocol(*args, 100, 0)


@pytest.mark.parametrize("which", ["key", "answers"])
def test_device_or_huge_file_is_refused(key, tmp_path, which):
    """/dev/zero and a file past the size cap are refused in one line, without reading them into memory."""
    from satgan.evaluate.turing import MAX_JSON_BYTES

    key_path = _write(tmp_path / "key.json", key)
    ans = _write(tmp_path / "a.json", _answers(key, {key["tiles"][0]["id"]: "real"}))
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as fh:
        fh.truncate(MAX_JSON_BYTES + 1)  # sparse: no disk used
    for bad, why in ((Path("/dev/zero"), "character device"), (huge, "more than the cap")):
        args = ([ans], bad) if which == "key" else ([bad], key_path)
        with pytest.raises(DataError, match=why):
            score_by_protocol(*args, 100, 0)


def test_score_seed_out_of_range_is_a_usage_error(key, tmp_path):
    """`quiz score --seed -1` is argparse's usage error naming --seed, not a traceback."""
    key_path = _write(tmp_path / "key.json", key)
    ans = _write(tmp_path / "a.json", _answers(key, {key["tiles"][0]["id"]: "real"}))
    proc = _score_cli(str(ans), "--key", str(key_path), "--seed", "-1")
    assert proc.returncode == 2 and "argument --seed: expected an integer seed" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("out", ["data/eval", "data/eval/q2", "data/model", "data/./samples/x"])
def test_make_refuses_pipeline_output_folders(real_fake, tmp_path, repo_root, monkeypatch, capsys, out):
    """`quiz make --out data/eval` (and any pipeline output folder) is refused before anything is written."""
    import yaml

    from satgan.cli import run_main

    doc = yaml.safe_load((repo_root / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"paths": doc["paths"]}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        run_main(lambda: main(["make", "--holdout", "holdout.npy", "--samples", "samples.npy", "--out", out]), "turing")
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "a DVC output" in err[0]
    assert not (tmp_path / "data").exists()


def test_text_report_puts_both_splits_before_the_headline(key, tmp_path):
    """The printed score shows the error on fakes, then on reals, then the headline and its meaning."""
    key_path = _write(tmp_path / "key.json", key)
    plan = {t["id"]: ("real" if i % 3 else "fake") for i, t in enumerate(key["tiles"])}
    text = format_result(score_files([_write(tmp_path / "a.json", _answers(key, plan))], key_path, 200, 0))
    assert text.index("error on fakes") < text.index("error on reals") < text.index("HYPE error, all answers")
    assert "means 'indistinguishable' only when" in text


def test_answers_for_another_quiz_are_refused(quiz_dir, tmp_path):
    """An answers file whose quiz_id differs from the key's is a DataError."""
    ans = tmp_path / "a.json"
    ans.write_text(json.dumps({"format": ANSWERS_FORMAT, "quiz_id": "other", "protocol": {"mode": "grid", "exposure_ms": None},
                               "answers": {"t000": "real"}}))
    with pytest.raises(DataError, match="answers are for quiz 'other'"):
        score_files([ans], quiz_dir / "turing_key.json", n_boot=100, seed=0)


# ----------------------------------------------------------------- foreign or damaged files

# Every checked field of the key with a value of the wrong type for it.
KEY_FIELDS = [
    (("format",), 2), (("quiz_id",), 7), (("salt",), None), (("seed",), "0"), (("nrow",), True), (("tiles",), {}),
    (("tiles", 0, "id"), 0), (("tiles", 0, "label"), ["real"]), (("tiles", 1, "source"), 1.5),
    (("tiles", 1, "source_index"), "3"), (("tiles", 2, "row"), 1.0), (("tiles", 2, "col"), None),
]


def _field_name(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(KEY_FIELDS), st.booleans())
def test_key_missing_or_mistyped_field_names_file_and_field(key, tmp_path_factory, case, delete):
    """Deleting any checked field of the key, or giving it a wrong type, is one DataError naming file and field."""
    (path, bad) = case
    doc = copy.deepcopy(key)
    node = doc
    for p in path[:-1]:
        node = node[p]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = bad
    f = _write(tmp_path_factory.mktemp("k") / "turing_key.json", doc)
    with pytest.raises(DataError) as err:
        load_key(f)
    msg = str(err.value)
    assert msg.startswith(f"{f}: ") and f"'{_field_name(path)}'" in msg and "\n" not in msg


@pytest.mark.parametrize("text, expected", [
    ("[1, 2]", "expected a JSON object"),
    ("{not json", "is not valid JSON"),
    ('{"format": "satgan-turing-key/1", "quiz_id": "x", "tiles": []}', "field 'format': expected 'satgan-turing-key/2'"),
    ("[" * 100000, "nested too deeply"),
])
def test_foreign_key_file_via_cli_is_one_line_and_exit_2(key, tmp_path, text, expected):
    """`score` with a foreign key file exits 2 with one 'turing: error:' line naming the file, no traceback."""
    key_path = tmp_path / "turing_key.json"
    key_path.write_text(text)
    ans = _write(tmp_path / "a.json", _answers(key, {"t000": "real"}))
    proc = _score_cli(str(ans), "--key", str(key_path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"turing: error: {key_path}: ") and expected in proc.stderr


def test_binary_key_file_is_a_clear_error(tmp_path):
    """A key file that is not UTF-8 text is a DataError, not a UnicodeDecodeError traceback."""
    f = tmp_path / "turing_key.json"
    f.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not UTF-8"):
        load_key(f)


@pytest.mark.parametrize("patch, field", [
    ({"protocol": None}, "'protocol'"),
    ({"protocol": {"mode": "sideways", "exposure_ms": None}}, "'protocol.mode'"),
    ({"protocol": {"mode": "single", "exposure_ms": 5}}, "'protocol.exposure_ms'"),
    ({"protocol": {"mode": "single"}}, "'protocol.exposure_ms'"),
    ({"answers": {"t000": "maybe"}}, "'answers.t000'"),
    ({"answers": []}, "'answers'"),
    ({"format": "satgan-turing-answers/1"}, "'format'"),
])
def test_bad_answers_file_names_the_field(key, tmp_path, patch, field):
    """An answers file with a missing or wrong field is one DataError naming the file and that field."""
    key_path = _write(tmp_path / "key.json", key)
    ans = _write(tmp_path / "a.json", {**_answers(key, {"t000": "real", "t001": "fake"}), **patch})
    with pytest.raises(DataError) as err:
        score_files([ans], key_path, 100, 0)
    assert str(err.value).startswith(f"{ans}: ") and field in str(err.value)


# ----------------------------------------------------------------- the page in Chromium


def _launch(pw):
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def _score_exported(exported: str, tmp_path: Path, quiz_dir: Path) -> dict:
    answers = tmp_path / "answers.json"
    answers.write_text(exported)
    proc = _score_cli(str(answers), "--key", str(quiz_dir / "turing_key.json"), "--bootstrap", "200", "--json")
    assert proc.returncode == 0, proc.stderr
    scored = json.loads(proc.stdout)
    assert len(scored["by_protocol"]) == 1
    return scored["by_protocol"][0]


@needs_chromium
def test_grid_quiz_in_chromium_scores_with_cli(quiz_dir, key, tmp_path):
    """Answer every tile on the grid in real Chromium, export answers-<participant>.json, score it with the CLI."""
    from playwright.sync_api import sync_playwright

    # Answer the first 4 tiles right and the rest "real": a known number of correct answers.
    plan = {t["id"]: (t["label"] if i < 4 else "real") for i, t in enumerate(key["tiles"])}
    expected_right = sum(plan[t["id"]] == t["label"] for t in key["tiles"])
    with sync_playwright() as pw:
        browser = _launch(pw)
        page = browser.new_page()
        page.goto((quiz_dir / "quiz.html").as_uri())
        page.fill("#participant", "Ann Lee/../x")
        page.check("input[name=mode][value=grid]")
        page.click("#start")
        assert page.locator("#finish").is_disabled()
        for tid, answer in plan.items():
            page.click(f"#tile-{tid} button[data-answer={answer}]")
        page.click("#finish")
        correct = int(page.locator("#score").get_attribute("data-correct"))
        exported = page.locator("#answers-json").text_content()
        href = page.locator("#download").get_attribute("href")
        filename = page.locator("#download").get_attribute("download")
        browser.close()
    assert correct == expected_right and href.startswith("data:application/json")
    assert filename == "answers-Ann-Leex.json" and json.loads(exported)["participant"] == "Ann-Leex"
    result = _score_exported(exported, tmp_path, quiz_dir)
    assert result["hype_infinity"] == pytest.approx(1 - correct / len(plan))
    assert result["protocol"]["mode"] == "grid" and result["n_answers"] == len(plan)


def _run_single(page, plan: dict[str, str]) -> list[str]:
    """Answer tile after tile as the page presents them; returns the order seen."""
    seen = []
    for _ in plan:
        page.wait_for_selector("#single .answer[data-answer=real]:not([disabled])")
        tid = page.locator("#stage").get_attribute("data-tile")
        seen.append(tid)
        page.click(f"#single .answer[data-answer={plan[tid]}]")
    page.wait_for_selector("body[data-state=done]")
    return seen


@needs_chromium
def test_one_at_a_time_in_random_order_per_evaluator(quiz_dir, key, tmp_path):
    """HYPE's protocol: each tile alone, every tile once, a fresh order per evaluator, scored by the CLI."""
    from playwright.sync_api import sync_playwright

    plan = {t["id"]: ("fake" if i % 3 == 0 else "real") for i, t in enumerate(key["tiles"])}
    orders, exported = [], []
    with sync_playwright() as pw:
        browser = _launch(pw)
        for _ in range(2):
            page = browser.new_page()
            page.goto((quiz_dir / "quiz.html").as_uri())
            page.click("#start")  # one at a time is the default
            assert page.locator("#grid .tile").count() == 0
            orders.append(_run_single(page, plan))
            exported.append(page.locator("#answers-json").text_content())
            page.close()
        browser.close()
    assert sorted(orders[0]) == sorted(plan) and orders[0] != orders[1]
    doc = json.loads(exported[0])
    assert doc["participant"].startswith("anon-") and doc["participant"] != json.loads(exported[1])["participant"]
    assert doc["order"] == orders[0] and doc["protocol"] == {"mode": "single", "exposure_ms": None}
    assert set(doc["response_ms"]) == set(plan)
    result = _score_exported(exported[0], tmp_path, quiz_dir)
    wrong = sum(plan[t["id"]] != t["label"] for t in key["tiles"])
    assert result["hype_infinity"] == pytest.approx(wrong / len(plan))


@needs_chromium
def test_fixed_exposure_masks_the_tile_and_is_recorded(quiz_dir, key, tmp_path):
    """With exposure_ms preset in the link, each tile is hidden behind a mask after that time; the protocol is exported."""
    from playwright.sync_api import sync_playwright

    plan = {t["id"]: ("real" if i % 2 else "fake") for i, t in enumerate(key["tiles"])}
    with sync_playwright() as pw:
        browser = _launch(pw)
        page = browser.new_page()
        page.goto((quiz_dir / "quiz.html").as_uri() + "#mode=single&exposure_ms=150")
        page.click("#start")
        page.wait_for_selector("#stage[data-phase=masked]", timeout=5000)
        assert page.locator("#trial-img").is_hidden() and page.locator("#mask").is_visible()
        _run_single(page, plan)
        doc = json.loads(page.locator("#answers-json").text_content())
        browser.close()
    assert doc["protocol"] == {"mode": "single", "exposure_ms": 150}
    assert _score_exported(json.dumps(doc), tmp_path, quiz_dir)["protocol"]["exposure_ms"] == 150


def test_make_finds_the_arrays_through_params_paths(real_fake, tmp_path, repo_root):
    """`turing make --params p.yaml` reads holdout.npy and samples.npy from the folders params.yaml names."""
    import yaml

    doc = yaml.safe_load((repo_root / "params.yaml").read_text())
    doc["paths"]["prepared"], doc["paths"]["samples"] = str(tmp_path / "prep"), str(tmp_path / "samp")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    save_array_with_sidecar(tmp_path / "prep" / "holdout.npy", real_fake[0], {})
    save_array_with_sidecar(tmp_path / "samp" / "samples.npy", real_fake[1], {})
    proc = subprocess.run([sys.executable, "-m", "satgan.evaluate.turing", "make", "--params", str(tmp_path / "p.yaml"),
                           "--out", str(tmp_path / "q"), "--quiz-id", "fixed-1", "--n-real", "2", "--n-fake", "2"],
                          capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert load_key(tmp_path / "q" / "turing_key.json")["quiz_id"] == "fixed-1"


def test_score_refuses_an_unbounded_bootstrap(key, tmp_path):
    """`--bootstrap 1000000000` is refused in one usage line instead of running for hours."""
    key_path = _write(tmp_path / "key.json", key)
    answers = _write(tmp_path / "a.json", _answers(key, {t["id"]: t["label"] for t in key["tiles"]}, "single"))
    proc = _score_cli(str(answers), "--key", str(key_path), "--bootstrap", "1000000000")
    assert proc.returncode == 2 and "--bootstrap" in proc.stderr and "Traceback" not in proc.stderr
