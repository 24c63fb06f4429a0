"""Tests for satgan.evaluate.stage and stages/evaluate.py on tiny real tiles."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st

from class_helpers import write_sample_classes
from satgan.arrays import open_prepared, save_array_with_sidecar
from satgan.errors import DataError, ParamsError
from satgan.evaluate.classes import per_class_block, read_prepared_classes, read_sample_classes
from satgan.evaluate.metrics import clopper_pearson
from satgan.evaluate.params import EvaluateParams
from satgan.evaluate.readings import judge_conclusive
from satgan.evaluate.stage import adapt_counts, evaluate, floor_key, recover_outputs
from satgan.model import ModelConfig, build_discriminator, build_generator
from satgan.modelio import save_model
from satgan.params import load_section
from tiles import load_tiles

PHASES = ["Turing test", "judge", "distances", "floor", "memorization", "diversity", "FID/KID"]


def _params(repo_root: Path, tmp_path: Path, **patch) -> Path:
    """The repository's params.yaml with ``evaluate`` keys patched (small sizes for speed)."""
    doc = yaml.safe_load((repo_root / "params.yaml").read_text())
    ev = doc["evaluate"]
    ev["turing"] = {"n_real": 6, "n_fake": 6, "nrow": 4}
    ev["judge"]["epochs"] = 5
    ev["classifier"]["epochs"] = 40
    ev["swd"]["repeats"] = 1
    ev["diversity"]["max_pairs"] = 100
    ev.update(patch)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def dirs(rsscn7_files, tmp_path_factory):
    """prepared/ (60 training + 30 held-out real tiles) and samples/ (30 'fakes' = copies of training tiles)."""
    root = tmp_path_factory.mktemp("pipe")
    tiles = load_tiles(rsscn7_files[::3][:90])
    (root / "prepared").mkdir()
    save_array_with_sidecar(root / "prepared" / "tiles.npy", tiles[:60].astype(np.float16), {})
    save_array_with_sidecar(root / "prepared" / "holdout.npy", tiles[60:], {})
    (root / "samples").mkdir()
    model = {"loaded_weights": "generator_ema.safetensors", "step": 3, "params_hash": "p", "data_hash": "d"}
    save_array_with_sidecar(root / "samples" / "samples.npy", tiles[:30], {"model": model, "architecture": {"image_size": 32}})
    write_sample_classes(root / "samples")
    return root


def test_stage_writes_numeric_metrics_and_every_artifact(dirs, repo_root, tmp_path):
    """stages/evaluate.py writes numeric metrics.json, the Turing files, closest pairs, FID as not computed; one stderr line per phase."""
    params = _params(repo_root, tmp_path)
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, str(repo_root / "stages" / "evaluate.py"), "--prepared", str(dirs / "prepared"),
                           "--samples", str(dirs / "samples"), "--out", str(out), "--params", str(params)],
                          check=True, capture_output=True, text=True)
    starts = [line.split("] ")[1].split(":")[0] for line in proc.stderr.splitlines() if line.startswith("evaluate: [")]
    assert starts == PHASES and proc.stderr.splitlines()[-1].startswith("evaluate: done in ")
    m = json.loads((out / "metrics.json").read_text())

    def leaves(d):
        return [x for v in d.values() for x in (leaves(v) if isinstance(v, dict) else [v])]

    assert m.pop("against") == "holdout"  # the one word: which real split the fakes were compared with
    assert all(isinstance(v, (int, float)) for v in leaves(m))
    for name in ("quiz.html", "turing_grid.png", "turing_key.json", "closest_pairs.png"):
        assert (out / name).is_file()
    assert json.loads((out / "fid_kid.json").read_text())["fid"] == "not computed"


def test_model_card_joins_the_evaluated_model_and_its_metrics(dirs, repo_root, tmp_path):
    """model_card.json names the sampled model (step, hashes, weights) beside exactly the metrics written."""
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    m = evaluate(dirs / "prepared", dirs / "samples", tmp_path / "eval", params)
    card = json.loads((tmp_path / "eval" / "model_card.json").read_text())
    assert card["model"]["step"] == 3 and card["model"]["loaded_weights"] == "generator_ema.safetensors"
    assert card["metrics"] == json.loads((tmp_path / "eval" / "metrics.json").read_text()) == json.loads(json.dumps(m))


def test_two_runs_give_identical_metrics(dirs, repo_root, tmp_path):
    """evaluate twice on the same samples and held-out tiles, on 2 threads: the same metrics.json, judge included."""
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = evaluate(dirs / "prepared", dirs / "samples", tmp_path / "a", params)
        b = evaluate(dirs / "prepared", dirs / "samples", tmp_path / "b", params)
    finally:
        torch.set_num_threads(threads)
    assert a == b and {"log_loss", "brier"} <= set(a["judge"])
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()


def test_copied_training_tiles_are_flagged(dirs, repo_root, tmp_path):
    """Samples that are training tiles score SSIM 1 to their neighbour; held-out real tiles do not."""
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    m = evaluate(dirs / "prepared", dirs / "samples", tmp_path / "eval", params)
    assert m["memorization"]["frac_above_threshold"] == 1.0
    assert m["memorization"]["holdout_frac_above_threshold"] < 0.2


def test_nested_param_errors_name_the_dotted_key(repo_root, tmp_path):
    """A bad nested value is refused with its full dotted key."""
    doc = yaml.safe_load((repo_root / "params.yaml").read_text())
    doc["evaluate"]["judge"]["folds"] = 1
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ParamsError, match=r"evaluate\.judge\.folds"):
        load_section("evaluate", EvaluateParams, path)


# ----------------------------------------------------------------- small data


REPO_ROOT = Path(__file__).resolve().parents[1]


# params.yaml parsed once: parsing it inside every draw made Hypothesis's too-slow health check fail on a loaded box
SHIPPED = load_section("evaluate", EvaluateParams, REPO_ROOT / "params.yaml")


@st.composite
def sizes_and_params(draw, base=SHIPPED):
    p = dataclasses.replace(
        base,
        turing=dataclasses.replace(base.turing, n_real=draw(st.integers(1, 64)), n_fake=draw(st.integers(1, 64))),
        judge=dataclasses.replace(base.judge, folds=draw(st.integers(2, 10))),
        swd=dataclasses.replace(base.swd, patches_per_image=draw(st.integers(1, 500)), patch_size=draw(st.integers(1, 16))),
        memorization=dataclasses.replace(base.memorization, top_k=draw(st.integers(1, 50)),
                                         n_pairs_image=draw(st.integers(1, 50))),
        diversity=dataclasses.replace(base.diversity, max_pairs=draw(st.integers(1, 5000))),
    )
    n = [draw(st.integers(2, 600)) for _ in range(3)]
    return p, n, draw(st.sampled_from([32, 64, 128])), draw(st.one_of(st.none(), st.integers(2, n[1])))


@given(sizes_and_params())
def test_adapted_counts_never_exceed_what_is_asked_or_exists(case):
    """Every used count is between 1 and the asked one, and fits the tiles, pairs or patches that exist."""
    p, (n_train, n_holdout, n_fake), tile, groups = case
    got = {a.name: a for a in adapt_counts(p, n_train, n_holdout, n_fake, tile, groups)}
    assert all(1 <= a.used <= max(a.asked, 1) for a in got.values())
    per_class = min(n_holdout, n_fake)
    assert got["turing_n_real"].used <= n_holdout and got["turing_n_fake"].used <= n_fake
    assert 2 <= got["judge_folds"].used <= max(2, min(per_class, n_holdout if groups is None else groups))
    assert got["memorization_top_k"].used <= n_train and got["memorization_n_pairs_image"].used <= n_fake
    assert got["diversity_pairs_real"].used <= n_holdout * (n_holdout - 1) // 2
    assert got["diversity_pairs_fake"].used <= n_fake * (n_fake - 1) // 2
    assert got["swd_patches_per_image"].used <= 16 * 16


def test_counts_the_data_can_fill_are_left_alone(repo_root):
    """With the default params and the default dataset's sizes nothing is adapted."""
    p = load_section("evaluate", EvaluateParams, repo_root / "params.yaml")
    assert not [a for a in adapt_counts(p, 657, 82, 512, 64) if a.changed]


@pytest.fixture(scope="module")
def small(rsscn7_files, tmp_path_factory):
    """A small region: 40 training, 9 held-out real and 24 generated tiles, and the model folder that made them."""
    root = tmp_path_factory.mktemp("small")
    tiles = load_tiles(rsscn7_files[1::3][:73])
    (root / "prepared").mkdir()
    save_array_with_sidecar(root / "prepared" / "tiles.npy", tiles[:40].astype(np.float16), {})
    save_array_with_sidecar(root / "prepared" / "holdout.npy", tiles[40:49], {})
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4)
    card = save_model(root / "model", build_generator(cfg), build_discriminator(cfg), cfg,
                      params_hash="p", data_hash="d", step=3, extra={"device": "cpu"})
    model = {"loaded_weights": "generator.safetensors", "step": card["step"], "params_hash": "p", "data_hash": "d"}
    (root / "samples").mkdir()
    save_array_with_sidecar(root / "samples" / "samples.npy", tiles[49:73], {"model": model, "architecture": card["architecture"]})
    write_sample_classes(root / "samples")
    return root


def test_small_region_runs_with_the_default_params_and_records_what_it_adapted(small, repo_root, tmp_path):
    """9 held-out tiles with the default evaluate params: the stage succeeds, says each adaptation once, records asked/used."""
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, str(repo_root / "stages" / "evaluate.py"), "--prepared", str(small / "prepared"),
                           "--samples", str(small / "samples"), "--out", str(out), "--params", str(repo_root / "params.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["adapted"]["turing_n_real"] == {"asked": 16, "used": 9}
    assert m["adapted"]["diversity_pairs_real"] == {"asked": 2000, "used": 36}
    assert m["adapted"]["turing_n_fake"] == {"asked": 16, "used": 16}
    adapted = [line for line in proc.stderr.splitlines() if line.startswith("evaluate: adapted ")]
    assert adapted == ["evaluate: adapted turing.n_real: 16 -> 9 (only 9 held-out real tiles)",
                       "evaluate: adapted diversity.max_pairs: 2000 -> 36 (9 held-out real tiles make only 36 pairs)",
                       "evaluate: adapted diversity.max_pairs: 2000 -> 276 (24 generated tiles make only 276 pairs)"]
    key = json.loads((out / "turing_key.json").read_text())
    assert sum(t["label"] == "real" for t in key["tiles"]) == 9


def test_a_judge_on_a_few_tiles_carries_its_interval(small, repo_root, tmp_path):
    """The judge's 95% interval is recorded around its accuracy, and conclusive follows the rule."""
    params = load_section("evaluate", EvaluateParams, repo_root / "params.yaml")
    j = evaluate(small / "prepared", small / "samples", tmp_path / "eval", params, progress=False)["judge"]
    assert j["n_test"] == 18  # every one of the 9 held-out reals and as many fakes
    assert (j["accuracy_ci_low"], j["accuracy_ci_high"]) == clopper_pearson(round(j["accuracy"] * 18), 18)
    assert j["accuracy_ci_low"] <= j["accuracy"] <= j["accuracy_ci_high"]
    assert j["conclusive"] == int(judge_conclusive(j["p_value"], j["accuracy_ci_high"]))


def test_model_card_with_the_evaluation_is_written_next_to_the_metrics(small, repo_root, tmp_path):
    """With the model folder, MODEL_CARD.md holds the model's card and a table of this evaluation."""
    params = load_section("evaluate", EvaluateParams, repo_root / "params.yaml")
    evaluate(small / "prepared", small / "samples", tmp_path / "eval", params, model_dir=small / "model", progress=False)
    card = (tmp_path / "eval" / "MODEL_CARD.md").read_text()
    assert "not evaluated yet" in (small / "model" / "MODEL_CARD.md").read_text()
    assert "not evaluated yet" not in card and "| judge accuracy |" in card and "Written by the evaluate stage" in card
    assert "9 held-out real tiles, 24 samples" in card


def test_a_card_of_another_model_is_not_joined_with_these_metrics(small, repo_root, tmp_path, capsys):
    """A model folder at another step than the samples' model: no MODEL_CARD.md, one warning line."""
    params = load_section("evaluate", EvaluateParams, repo_root / "params.yaml")
    other = tmp_path / "model"
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4)
    save_model(other, build_generator(cfg), build_discriminator(cfg), cfg, params_hash="p", data_hash="d", step=9)
    evaluate(small / "prepared", small / "samples", tmp_path / "eval", params, model_dir=other)
    assert not (tmp_path / "eval" / "MODEL_CARD.md").exists()
    assert "is not the model whose samples were evaluated (step 9 vs 3)" in capsys.readouterr().err


# ----------------------------------------------------------------- labelled data: GAN-test and per-class figures

RSSCN7_CLASSES = ["aGrass", "bField", "cIndustry", "dRiverLake", "eForest", "fResident", "gParking"]


@pytest.fixture(scope="module")
def labelled(rsscn7_files, tmp_path_factory):
    """Labelled prepared/ (7 RSSCN7 classes: 24 training + 6 held-out real tiles each) and 70 unseen real tiles
    (10 per class) as "samples", with their true classes; samples/classes/ is written by each test."""
    root = tmp_path_factory.mktemp("labelled")
    by_class = [[f for f in rsscn7_files if f.parent.name == c] for c in RSSCN7_CLASSES]
    assert all(len(files) == 40 for files in by_class)
    parts = {"train": (0, 24), "holdout": (24, 30), "fake": (30, 40)}
    tiles, labels = {}, {}
    for split, (a, b) in parts.items():
        tiles[split] = load_tiles([f for files in by_class for f in files[a:b]])
        labels[split] = np.repeat(np.arange(7), b - a).astype(np.int64)
    meta = {"classes": RSSCN7_CLASSES}
    prepared = root / "prepared"
    prepared.mkdir()
    save_array_with_sidecar(prepared / "tiles.npy", tiles["train"].astype(np.float16), meta)
    save_array_with_sidecar(prepared / "holdout.npy", tiles["holdout"], meta)
    np.save(prepared / "labels.npy", labels["train"])
    np.save(prepared / "holdout_labels.npy", labels["holdout"])
    return root, tiles["fake"], labels["fake"]


def _samples(root: Path, name: str, fake: np.ndarray, labels: np.ndarray | None, classes=RSSCN7_CLASSES) -> Path:
    """A samples/ folder holding ``fake`` and classes/ for a conditional (labels given) or unconditional model."""
    folder = root / name
    model = {"loaded_weights": "generator.safetensors", "step": 3, "params_hash": "p", "data_hash": "d"}
    save_array_with_sidecar(folder / "samples.npy", fake, {"model": model, "architecture": {"image_size": 32}})
    if labels is None:
        write_sample_classes(folder)
    else:
        write_sample_classes(folder, classes, labels)
    return folder


def test_real_tiles_with_their_classes_score_a_gan_test_near_the_real_test(labelled, repo_root, tmp_path):
    """Unseen real tiles as a conditional model's samples: real-test well above chance, GAN-test's interval meets it."""
    root, fake, labels = labelled
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    c = evaluate(root / "prepared", _samples(tmp_path, "s", fake, labels), tmp_path / "eval", params, progress=False)["classifier"]
    assert c["n_classes"] == 7 and c["n_train"] == 168 and c["real_test"]["n"] == 42
    assert c["real_test"]["accuracy"] >= 0.5 > 3 * c["chance"]
    assert c["gan_test"]["n"] == 70 and c["gan_test"]["ci_high"] >= c["real_test"]["ci_low"]
    assert c["gan_test"]["ci_low"] > c["chance"]
    assert set(c["gan_test"]["per_class"]) == set(c["real_test"]["per_class"]) == set(RSSCN7_CLASSES)


def test_samples_with_shuffled_classes_score_a_low_gan_test(labelled, repo_root, tmp_path):
    """The same tiles asked for the wrong classes (labels shifted by one): GAN-test accuracy falls far below the real-test."""
    root, fake, labels = labelled
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    right = evaluate(root / "prepared", _samples(tmp_path, "a", fake, labels), tmp_path / "a", params, progress=False)
    wrong = evaluate(root / "prepared", _samples(tmp_path, "b", fake, (labels + 1) % 7), tmp_path / "b", params,
                     progress=False)
    assert wrong["classifier"]["gan_test"]["accuracy"] <= 0.25
    assert wrong["classifier"]["gan_test"]["ci_high"] < right["classifier"]["gan_test"]["accuracy"]
    assert wrong["classifier"]["gan_test"]["ci_low"] <= wrong["classifier"]["chance"]
    assert wrong["classifier"]["real_test"] == right["classifier"]["real_test"]


def test_every_class_gets_its_judge_swd_and_diversity_with_intervals(labelled, repo_root, tmp_path):
    """per_class has each class with 6 held-out and 10 generated tiles; its judge scores 6 + 6 and reads by the rule."""
    root, fake, labels = labelled
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    m = evaluate(root / "prepared", _samples(tmp_path, "s", fake, labels), tmp_path / "eval", params, progress=False)
    assert list(m["per_class"]) == RSSCN7_CLASSES
    for entry in m["per_class"].values():
        j = entry["judge"]
        assert entry["n_holdout"] == 6 and entry["n_fake"] == 10 and j["n_test"] == 12
        assert j["conclusive"] == int(judge_conclusive(j["p_value"], j["accuracy_ci_high"]))
        assert j["accuracy_ci_low"] <= j["accuracy"] <= j["accuracy_ci_high"]
        assert entry["swd"]["mean"] > 0 and -1 <= entry["diversity"]["fake_mean_ssim"] <= 1


def test_labelled_phases_are_said_and_the_classifier_line_printed(labelled, repo_root, tmp_path):
    """The stage says the classifier and per-class phases as they start and prints the GAN-test line."""
    root, fake, labels = labelled
    samples = _samples(tmp_path, "s", fake, labels)
    proc = subprocess.run([sys.executable, str(repo_root / "stages" / "evaluate.py"), "--prepared", str(root / "prepared"),
                           "--samples", str(samples), "--out", str(tmp_path / "eval"),
                           "--params", str(_params(repo_root, tmp_path))], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    starts = [line.split("] ")[1].split(":")[0] for line in proc.stderr.splitlines() if line.startswith("evaluate: [")]
    assert starts == PHASES[:6] + ["classifier", "per class", "FID/KID"]
    assert "evaluate: GAN-test accuracy " in proc.stdout


def test_per_class_off_leaves_a_marked_section_and_no_phase(labelled, repo_root, tmp_path):
    """evaluate.per_class false: the classifier still runs, per_class reads 'not computed' with the key."""
    root, fake, labels = labelled
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path, per_class=False))
    m = evaluate(root / "prepared", _samples(tmp_path, "s", fake, labels), tmp_path / "eval", params, progress=False)
    assert m["per_class"] == "not computed: evaluate.per_class is false" and "gan_test" in m["classifier"]


def test_two_labelled_runs_write_the_same_metrics(labelled, repo_root, tmp_path):
    """Classifier, GAN-test and per-class figures included, two runs on the same inputs write the same metrics.json."""
    root, fake, labels = labelled
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    samples = _samples(tmp_path, "s", fake, labels)
    evaluate(root / "prepared", samples, tmp_path / "a", params, progress=False)
    evaluate(root / "prepared", samples, tmp_path / "b", params, progress=False)
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()


def test_the_classifier_trains_on_at_most_max_train_tiles(labelled, repo_root, tmp_path, capsys):
    """classifier.max_train_tiles 50 of 168 labelled tiles: it trains on 50 and the phase line says so."""
    root, fake, labels = labelled
    doc = yaml.safe_load(_params(repo_root, tmp_path).read_text())
    doc["evaluate"]["classifier"]["max_train_tiles"] = 50
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    params = load_section("evaluate", EvaluateParams, tmp_path / "p.yaml")
    m = evaluate(root / "prepared", _samples(tmp_path, "s", fake, labels), tmp_path / "eval", params)
    assert m["classifier"]["n_train"] == 50 and "epochs on 50 of 168 labelled training tiles" in capsys.readouterr().err


def test_an_unconditional_model_that_makes_one_class_shows_in_the_class_spread(labelled, repo_root, tmp_path):
    """Unconditional samples of one class only are far from the reals' spread; samples of every class are close."""
    root, fake, labels = labelled
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    spread = evaluate(root / "prepared", _samples(tmp_path, "a", fake, None), tmp_path / "a", params, progress=False)
    one = evaluate(root / "prepared", _samples(tmp_path, "b", fake[labels == 4], None), tmp_path / "b", params,
                   progress=False)
    for m in (spread, one):
        assert "gan_test" not in m["classifier"] and m["per_class"].startswith("not computed: the samples carry no class")
        assert sum(v["fake"] for v in m["classifier"]["shares"].values()) == pytest.approx(1.0)
    assert one["classifier"]["tv_distance"] >= 0.5 > spread["classifier"]["tv_distance"] + 0.2


def test_a_class_with_too_few_tiles_records_why(labelled, repo_root):
    """A class with one held-out tile gets 'not computed' with the counts instead of figures; the others are computed."""
    root, fake, labels = labelled
    params = load_section("evaluate", EvaluateParams, repo_root / "params.yaml")
    params = dataclasses.replace(params, judge=dataclasses.replace(params.judge, epochs=1))
    holdout_labels = np.array([0, 1, 1, 2, 2], np.int64)
    holdout = fake[[0, 10, 11, 20, 21]]
    got = per_class_block(holdout, holdout_labels, fake[:30], labels[:30], ("a", "b", "c"), params, 8, 0)
    assert got["a"]["judge"] == got["a"]["swd"] == got["a"]["diversity"] == (
        "not computed: 1 held-out real and 10 generated tiles of this class; a per-class figure needs at least 2 of each")
    assert isinstance(got["b"]["judge"], dict) and got["c"]["n_holdout"] == 2


def _stage(repo_root: Path, prepared: Path, samples: Path, out: Path, params: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(repo_root / "stages" / "evaluate.py"), "--prepared", str(prepared),
                           "--samples", str(samples), "--out", str(out), "--params", str(params)],
                          capture_output=True, text=True)


def test_classes_other_than_the_prepared_ones_stop_with_one_line_naming_both_files(labelled, repo_root, tmp_path):
    """A conditional model of the classes in another order: exit 2, one line naming classes.json and tiles.json."""
    root, fake, labels = labelled
    samples = _samples(tmp_path, "s", fake, labels, classes=RSSCN7_CLASSES[::-1])
    proc = _stage(repo_root, root / "prepared", samples, tmp_path / "eval", _params(repo_root, tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert str(samples / "classes" / "classes.json") in proc.stderr and str(root / "prepared" / "tiles.json") in proc.stderr


def test_a_conditional_model_on_unlabelled_data_is_refused(dirs, labelled, repo_root, tmp_path):
    """Samples of classes against prepared data without labels: one line saying the prepared data have no labels."""
    _, fake, labels = labelled
    samples = _samples(tmp_path, "s", fake[:30], labels[:30])
    proc = _stage(repo_root, dirs / "prepared", samples, tmp_path / "eval", _params(repo_root, tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "the prepared data have no labels" in proc.stderr


def test_missing_class_info_says_to_rerun_generate(dirs, repo_root, tmp_path):
    """No samples/classes/classes.json: exit 2, one line naming it and saying to rerun generate."""
    import shutil

    samples = tmp_path / "samples"
    shutil.copytree(dirs / "samples", samples)
    shutil.rmtree(samples / "classes")
    proc = _stage(repo_root, dirs / "prepared", samples, tmp_path / "eval", _params(repo_root, tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "classes/classes.json: not found" in proc.stderr and "rerun generate" in proc.stderr


@pytest.mark.parametrize("info", ['{"conditional": "none"}', '{"conditional": "projection", "classes": []}',
                                  '{"conditional": "film", "classes": ["a"]}', "[1, 2]", "{not json"])
def test_malformed_class_info_is_one_error_naming_the_file(dirs, tmp_path, info):
    """A classes.json without both keys, with classes that contradict conditional, or not JSON: DataError naming it."""
    (tmp_path / "classes").mkdir()
    (tmp_path / "classes" / "classes.json").write_text(info)
    with pytest.raises(DataError, match=r"classes\.json: .*rerun generate"):
        read_sample_classes(tmp_path, 30)


@pytest.mark.parametrize("labels", [np.zeros(29, np.int64), np.full(30, 7, np.int64), np.zeros(30, np.int32)])
def test_sample_labels_of_the_wrong_length_range_or_type_are_refused(labelled, tmp_path, labels):
    """classes/labels.npy one short, a class index past the last class, or int32: DataError naming labels.npy."""
    write_sample_classes(tmp_path, RSSCN7_CLASSES)
    np.save(tmp_path / "classes" / "labels.npy", labels)
    with pytest.raises(DataError, match=r"classes/labels\.npy: expected"):
        read_sample_classes(tmp_path, 30)


def test_unlabelled_data_write_the_metrics_as_before(dirs, repo_root, tmp_path):
    """No labels.npy in prepared/: metrics.json has exactly the sections it had before classes existed."""
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    m = evaluate(dirs / "prepared", dirs / "samples", tmp_path / "eval", params, progress=False)
    assert set(m) == {"against", "n", "independent", "judge", "swd", "colour_hist", "spectral", "floor", "memorization",
                      "diversity", "adapted"}


def test_classifier_param_errors_name_the_dotted_key(repo_root, tmp_path):
    """A classifier cap below 2 tiles is refused with evaluate.classifier.max_train_tiles."""
    doc = yaml.safe_load((repo_root / "params.yaml").read_text())
    doc["evaluate"]["classifier"]["max_train_tiles"] = 1
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ParamsError, match=r"evaluate\.classifier\.max_train_tiles: expected an integer >= 2"):
        load_section("evaluate", EvaluateParams, path)


def test_the_model_card_names_the_gan_test_result(labelled, repo_root, tmp_path):
    """With labelled data and the model folder, MODEL_CARD.md carries the GAN-test row with its weakest class."""
    root, fake, labels = labelled
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4)
    save_model(tmp_path / "model", build_generator(cfg), build_discriminator(cfg), cfg, params_hash="p", data_hash="d", step=3)
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    evaluate(root / "prepared", _samples(tmp_path, "s", fake, labels), tmp_path / "eval", params,
             model_dir=tmp_path / "model", progress=False)
    card = (tmp_path / "eval" / "MODEL_CARD.md").read_text()
    assert "| GAN-test accuracy |" in card and "weakest class: " in card


def test_prepared_sidecars_naming_other_classes_are_one_error(labelled, tmp_path):
    """holdout.json naming the classes in another order than tiles.json: DataError naming holdout.json."""
    import shutil

    root, fake, labels = labelled
    prepared = tmp_path / "prepared"
    shutil.copytree(root / "prepared", prepared)
    meta = json.loads((prepared / "holdout.json").read_text())
    meta["classes"] = RSSCN7_CLASSES[::-1]
    (prepared / "holdout.json").write_text(json.dumps(meta))
    train, train_meta = open_prepared(prepared / "tiles.npy")
    holdout, holdout_meta = open_prepared(prepared / "holdout.npy")
    with pytest.raises(DataError, match=r"holdout\.json: expected the classes .* of tiles\.json.*rerun prepare"):
        read_prepared_classes(prepared, train_meta, holdout_meta, len(train), len(holdout))


def test_data_of_one_class_mark_the_classifier_not_computed(labelled, repo_root, tmp_path):
    """Prepared data whose labels name one class: no classifier phase, classifier and per_class say why."""
    import shutil

    root, fake, _ = labelled
    prepared = tmp_path / "prepared"
    shutil.copytree(root / "prepared", prepared)
    for name, labels in (("tiles", "labels.npy"), ("holdout", "holdout_labels.npy")):
        meta = json.loads((prepared / f"{name}.json").read_text())
        meta["classes"] = ["aGrass"]
        (prepared / f"{name}.json").write_text(json.dumps(meta))
        np.save(prepared / labels, np.zeros_like(np.load(prepared / labels)))
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    m = evaluate(prepared, _samples(tmp_path, "s", fake, None), tmp_path / "eval", params, progress=False)
    assert m["classifier"] == m["per_class"] == "not computed: the prepared data have one class (aGrass); a classifier needs at least 2"


# ----------------------------------------------------------------- floors, spectra, groups, the comparison split


def test_every_figure_has_its_real_vs_real_floor(dirs, repo_root, tmp_path):
    """metrics.json's floor holds the judge, SWD, colour and spectral distance between held-out and training reals."""
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    m = evaluate(dirs / "prepared", dirs / "samples", tmp_path / "eval", params, progress=False)
    f = m["floor"]
    assert f["n"] == 30 and {"accuracy", "auc", "log_loss", "accuracy_ci_low"} <= set(f["judge"])
    assert {"mean"} <= set(f["swd"]) & set(f["colour_hist"]) & set(f["spectral"])


def test_fakes_copied_from_training_tiles_sit_at_their_floor(dirs, repo_root, tmp_path):
    """Samples that are training tiles score spectral and colour distances like the training reals' floor (within 2x)."""
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    m = evaluate(dirs / "prepared", dirs / "samples", tmp_path / "eval", params, progress=False)
    assert m["spectral"]["mean"] <= 2 * m["floor"]["spectral"]["mean"]


def test_spectra_of_the_fakes_and_both_real_sets_are_written(dirs, repo_root, tmp_path):
    """spectra.json holds one value per radius for the fakes, the held-out reals and the training reals."""
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    evaluate(dirs / "prepared", dirs / "samples", tmp_path / "eval", params, progress=False)
    doc = json.loads((tmp_path / "eval" / "spectra.json").read_text())
    assert doc["radius"] == list(range(1, 17))
    assert set(doc) == {"radius", "fakes", "holdout reals", "training reals"}
    assert all(len(v) == 16 for v in doc.values())


def _with_boxes(src: Path, dst: Path, holdout_boxes: list) -> Path:
    """A copy of the prepared folder ``src`` whose holdout sidecar carries ``holdout_boxes``."""
    dst.mkdir()
    for name in ("tiles.npy", "tiles.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    arr, meta = open_prepared(src / "holdout.npy")
    save_array_with_sidecar(dst / "holdout.npy", np.asarray(arr), {"boxes": holdout_boxes})
    return dst


def test_overlapping_held_out_tiles_are_counted_as_their_areas(dirs, repo_root, tmp_path):
    """30 held-out tiles cut every half tile in rows of 10: 3 groups, the area of 16.5 tiles, the judge on 3 folds."""
    boxes = [["s", 64 * (i % 10), 1000 * (i // 10), 64 * (i % 10) + 128, 1000 * (i // 10) + 128] for i in range(30)]
    prepared = _with_boxes(dirs / "prepared", tmp_path / "prepared", boxes)
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    m = evaluate(prepared, dirs / "samples", tmp_path / "eval", params, progress=False)
    assert m["independent"] == {"groups_known": 1, "groups": 3, "area_equivalent": 16.5}
    assert m["judge"]["groups"] == 3 and m["judge"]["groups_known"] == 1 and m["judge"]["folds"] == 3


def test_malformed_boxes_are_one_error_naming_the_sidecar(dirs, repo_root, tmp_path):
    """Boxes of the wrong count stop evaluate with one line naming holdout.json and the key."""
    prepared = _with_boxes(dirs / "prepared", tmp_path / "prepared", [["s", 0, 0, 8, 8]])
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    with pytest.raises(DataError, match=r"holdout\.json: boxes: expected one box per row \(30\)"):
        evaluate(prepared, dirs / "samples", tmp_path / "eval", params, progress=False)


def test_against_validation_without_the_split_says_how_to_make_it(dirs, repo_root, tmp_path):
    """evaluate.against: validation with no validation.npy is one error naming the file and prepare's key."""
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path, against="validation"))
    with pytest.raises(DataError, match=r"validation\.npy: not found; .*prepare\.validation_fraction > 0"):
        evaluate(dirs / "prepared", dirs / "samples", tmp_path / "eval", params, progress=False)


def test_against_validation_compares_the_fakes_with_the_validation_tiles(dirs, repo_root, tmp_path):
    """With validation.npy present and evaluate.against: validation, the fakes meet those tiles and metrics.json says so."""
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    for name in ("tiles.npy", "tiles.json", "holdout.npy", "holdout.json"):
        (prepared / name).write_bytes((dirs / "prepared" / name).read_bytes())
    arr, meta = open_prepared(dirs / "prepared" / "holdout.npy")
    save_array_with_sidecar(prepared / "validation.npy", np.asarray(arr)[:12], {})
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path, against="validation"))
    m = evaluate(prepared, dirs / "samples", tmp_path / "eval", params, progress=False)
    assert m["against"] == "validation" and m["n"]["holdout"] == 12 and m["judge"]["n_test"] == 24


def test_against_names_its_choices(repo_root, tmp_path):
    """evaluate.against other than holdout or validation is refused naming the key."""
    with pytest.raises(ParamsError, match=r"evaluate\.against: expected one of holdout, validation"):
        load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path, against="test"))


def test_gan_train_scores_held_out_reals_with_a_classifier_trained_on_the_samples(labelled, repo_root, tmp_path):
    """Unseen real tiles as a conditional model's samples: GAN-train (trained on them, tested on held-out reals) beats chance."""
    root, fake, labels = labelled
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    c = evaluate(root / "prepared", _samples(tmp_path, "s", fake, labels), tmp_path / "eval", params, progress=False)["classifier"]
    assert c["gan_train"]["n"] == 42 and c["gan_train"]["ci_low"] > c["chance"]


# ----------------------------------------------------------------- the outputs are replaced as one


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def evaluated(small, repo_root, tmp_path_factory):
    """A finished evaluation of the small region (its outputs and params file), the 'previous run' of the tests below."""
    root = tmp_path_factory.mktemp("previous")
    params = _params(repo_root, root)
    out = root / "eval"
    proc = subprocess.run([sys.executable, str(repo_root / "stages" / "evaluate.py"), "--prepared", str(small / "prepared"),
                           "--samples", str(small / "samples"), "--out", str(out), "--params", str(params)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def test_a_failing_phase_leaves_the_previous_outputs_and_no_temp_files(small, evaluated, repo_root, tmp_path):
    """A bad evaluate.inception_weights file fails after the Turing phase: the previous outputs stay byte for byte.

    The FID phase refuses it as a bad file (DataError) where torch-fidelity is installed, and as a setting it
    cannot honour (ParamsError) where it is not (it is opt-in): a failing phase either way.
    """
    out = tmp_path / "eval"
    shutil.copytree(evaluated, out)
    before = _snapshot(out)
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a weights file")
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path, seed=8, inception_weights=str(bad)))
    with pytest.raises((DataError, ParamsError), match="inception_weights"):
        evaluate(small / "prepared", small / "samples", out, params, progress=False)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "params.yaml", "weights.pth"]


def test_a_killed_run_leaves_the_previous_outputs_and_the_next_run_tidies_up(small, evaluated, repo_root, tmp_path):
    """kill -9 after the Turing phase wrote its answer key: the previous outputs stay; the next run removes the staging."""
    out = tmp_path / "eval"
    shutil.copytree(evaluated, out)
    before = _snapshot(out)
    params = _params(repo_root, tmp_path, seed=9)
    cmd = [sys.executable, str(repo_root / "stages" / "evaluate.py"), "--prepared", str(small / "prepared"),
           "--samples", str(small / "samples"), "--out", str(out), "--params", str(params)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staged_key = tmp_path / ".eval.staging" / "turing_key.json"
    deadline = time.monotonic() + 120
    while not staged_key.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert staged_key.exists(), "the run never reached its Turing phase"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _snapshot(out) == before
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "params.yaml"]
    assert json.loads((out / "turing_key.json").read_text()) != json.loads(before["turing_key.json"])


def test_outputs_parked_by_a_run_killed_between_its_renames_are_put_back(tmp_path):
    """Killed after moving the old outputs aside but before moving the new ones in: the next run restores the old ones."""
    previous = tmp_path / ".eval.previous"
    previous.mkdir()
    (previous / "metrics.json").write_text("{}")
    (tmp_path / ".eval.staging").mkdir()
    recover_outputs(tmp_path / "eval")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]
    assert (tmp_path / "eval" / "metrics.json").read_text() == "{}"


def test_evaluate_seed_is_bounded(repo_root, tmp_path):
    """evaluate.seed outside 0..2**63-1 is one ParamsError naming the key, not a traceback from numpy or torch."""
    for seed in (-1, 2**63):
        with pytest.raises(ParamsError, match="seed"):
            load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path, seed=seed))


def test_judge_epochs_are_bounded(repo_root, tmp_path):
    """evaluate.judge.epochs: 1000000000 is refused with the key named instead of running for ever."""
    doc = yaml.safe_load(_params(repo_root, tmp_path).read_text())
    doc["evaluate"]["judge"]["epochs"] = 1_000_000_000
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ParamsError, match="epochs"):
        load_section("evaluate", EvaluateParams, path)


def test_the_artifact_folder_holds_the_model_with_its_evaluated_card(small, repo_root, tmp_path):
    """eval/model (dvc.yaml's generator artifact) holds model.json and the weights as trained plus the evaluated card,
    loads as a generator, and the train stage's folder is left as it was."""
    from satgan.modelio import load_generator

    before = {p.name: p.read_bytes() for p in (small / "model").iterdir()}
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    evaluate(small / "prepared", small / "samples", tmp_path / "eval", params, model_dir=small / "model", progress=False)
    art = tmp_path / "eval" / "model"
    assert {p.name: p.read_bytes() for p in (small / "model").iterdir()} == before
    assert (art / "generator.safetensors").read_bytes() == before["generator.safetensors"]
    assert (art / "model.json").read_bytes() == before["model.json"]
    assert (art / "MODEL_CARD.md").read_text() == (tmp_path / "eval" / "MODEL_CARD.md").read_text()
    assert "not evaluated yet" not in (art / "MODEL_CARD.md").read_text()
    assert load_generator(art)[1]["step"] == 3


def test_the_git_tracked_gitignore_in_the_eval_folder_survives_a_run(small, repo_root, tmp_path):
    """DVC's .gitignore in the eval folder (tracked by git) is carried into the new folder; an old run's stray file is not."""
    out = tmp_path / "eval"
    out.mkdir()
    (out / ".gitignore").write_text("/metrics.json\n")
    (out / "stale.png").write_bytes(b"an output of an older version")
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    evaluate(small / "prepared", small / "samples", out, params, progress=False)
    assert (out / ".gitignore").read_text() == "/metrics.json\n" and not (out / "stale.png").exists()


def _floor_line(err: str) -> str:
    """The floor phase's progress line."""
    return next(line for line in err.splitlines() if "] floor: " in line)


def test_a_rerun_reuses_the_floor_and_writes_the_same_metrics(dirs, repo_root, tmp_path, capsys):
    """A second run into the same folder takes the floor from floor_cache.json, says so, and writes the same metrics.json."""
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    out = tmp_path / "eval"
    evaluate(dirs / "prepared", dirs / "samples", out, params)
    first, err = (out / "metrics.json").read_bytes(), capsys.readouterr().err
    assert "no floor kept from an earlier run" in _floor_line(err)
    evaluate(dirs / "prepared", dirs / "samples", out, params)
    assert "reused from" in _floor_line(capsys.readouterr().err)
    assert (out / "metrics.json").read_bytes() == first and (out / "floor_cache.json").is_file()


def test_a_changed_param_recomputes_the_floor(dirs, repo_root, tmp_path, capsys):
    """Another evaluate.seed is another key: the kept floor is not reused."""
    out = tmp_path / "eval"
    evaluate(dirs / "prepared", dirs / "samples", out, load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path)))
    capsys.readouterr()
    other = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path, seed=8))
    evaluate(dirs / "prepared", dirs / "samples", out, other)
    assert "the tiles, params or code changed" in _floor_line(capsys.readouterr().err)


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"[1, 2]", b'{"format": "x", "key": "k", "floor": {}}',
                                     b'{"format": "satgan-floor-cache/1", "key": "k", "floor": {}, "extra": 1}'])
def test_a_foreign_floor_cache_is_ignored_and_replaced(dirs, repo_root, tmp_path, capsys, content):
    """A floor_cache.json that is not one evaluate wrote is recomputed over, in one line, never a traceback."""
    out = tmp_path / "eval"
    out.mkdir()
    (out / "floor_cache.json").write_bytes(content)
    m = evaluate(dirs / "prepared", dirs / "samples", out, load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path)))
    assert "ignored" in _floor_line(capsys.readouterr().err) and m["floor"]["judge"]["n_test"] > 0
    assert json.loads((out / "floor_cache.json").read_text())["floor"] == m["floor"]


def test_the_floor_key_follows_the_tiles_and_the_params(repo_root, tmp_path):
    """floor_key is the same for the same inputs and changes with one tile's pixel, the seed or a judge param."""
    params = load_section("evaluate", EvaluateParams, _params(repo_root, tmp_path))
    rng = np.random.default_rng(0)
    real, train = rng.uniform(-1, 1, (2, 6, 3, 8, 8)).astype(np.float32)
    used = {"swd_patches_per_image": 4}
    key = floor_key(real, train, None, params.judge, params, used)
    assert key == floor_key(real.copy(), train.copy(), None, params.judge, params, used)
    nudged = real.copy()
    nudged[0, 0, 0, 0] += 1e-3
    others = [floor_key(nudged, train, None, params.judge, params, used),
              floor_key(real, train, np.arange(6), params.judge, params, used),
              floor_key(real, train, None, dataclasses.replace(params.judge, epochs=params.judge.epochs + 1), params, used),
              floor_key(real, train, None, params.judge, dataclasses.replace(params, seed=params.seed + 1), used),
              floor_key(real, train, None, params.judge, params, {"swd_patches_per_image": 5})]
    assert len({key, *others}) == 1 + len(others)
