"""Tests for satgan.modelcard: the human-readable MODEL_CARD.md written next to model.json."""

from __future__ import annotations

import dataclasses
import json

import pytest

from satgan.model import ModelConfig, build_discriminator, build_generator
from satgan.modelcard import recipe, render
from satgan.modelio import save_model
from satgan.params import load_section
from satgan.provenance import SENTINEL_TERMS
from satgan.train import TrainParams
from satgan.train.registry import HACKS

CFG = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4)
META = {"count": 700, "shape": [700, 3, 32, 32], "image_size": 32, "channels": 3, "holdout_split": {"holdout": 82},
        "provenance": {"source": "sample", "tiles": 825, "what": "Sentinel-2 true colour (test)",
                       "area": "scene window rows 0-1920, columns 0-1920 (pixels)", "licence": SENTINEL_TERMS}}


@pytest.fixture(scope="module")
def train_params(repo_root) -> TrainParams:
    """The shipped train section with replay and EMA switched on (the card must list hacks with settings)."""
    shipped = load_section("train", TrainParams, repo_root / "params.yaml")
    hacks = dataclasses.replace(shipped.hacks, replay=dataclasses.replace(shipped.hacks.replay, enabled=True),
                                ema=dataclasses.replace(shipped.hacks.ema, enabled=True))
    return dataclasses.replace(shipped, hacks=hacks)


def _save(folder, **kwargs):
    return save_model(folder, build_generator(CFG), build_discriminator(CFG), CFG, generator_ema=build_generator(CFG),
                      params_hash="ph", data_hash="dh", step=600, extra={"device": "cpu", "world_size": 1, "resumed": False},
                      **kwargs)


def test_train_writes_a_complete_card_next_to_model_json(tmp_path, train_params):
    """With the sidecar, the train params and the wall time, every section of the card has its facts."""
    card = _save(tmp_path, data_meta=META, train_params=train_params, wall_seconds=183.2)
    text = (tmp_path / "MODEL_CARD.md").read_text()
    for section in ("What it makes", "Training data", "Training recipe", "Compute", "Evaluation", "Intended use",
                    "Limitations"):
        assert f"## {section}" in text
    assert "32x32 RGB" in text and "generator_ema.safetensors" in text
    assert SENTINEL_TERMS in text and "scene window rows 0-1920" in text and "700 training tiles" in text
    assert "`replay` (size 512, fraction 0.25)" in text and "600 steps on device `cpu`, 3 min 03 s of training" in text
    assert "not evaluated yet" in text
    assert json.loads((tmp_path / "model.json").read_text()) == json.loads(json.dumps(card))
    assert card["provenance"] == META["provenance"] and card["compute"] == {"steps": 600, "untimed_steps": 0, "wall_seconds": 183.2}


def test_a_card_without_the_trainers_facts_says_what_is_not_recorded(tmp_path):
    """Without sidecar, params or wall time, those parts read 'not recorded' instead of guessing."""
    _save(tmp_path)
    text = (tmp_path / "MODEL_CARD.md").read_text()
    assert "source, area and licence: not recorded" in text and "wall time not recorded" in text
    assert "not recorded beyond the train params hash `ph`" in text


def test_a_card_with_untimed_steps_says_the_training_time_is_unknown(tmp_path):
    """untimed_steps (a resumed old checkpoint): no wall_seconds; the card gives the known part, never a total."""
    card = _save(tmp_path, wall_seconds=61.0, untimed_steps=400)
    assert card["compute"] == {"steps": 600, "untimed_steps": 400, "timed_seconds": 61.0}
    assert ("600 steps on device `cpu`, training time unknown: the first 400 steps were trained before checkpoints "
            "recorded their time (the other 200 took 1 min 01 s)") in (tmp_path / "MODEL_CARD.md").read_text()


def test_a_resumed_card_from_before_untimed_steps_says_its_time_is_the_last_runs(tmp_path):
    """A resumed model.json whose compute has no untimed_steps (older satgan) timed its last run only, and says so."""
    card = {**_save(tmp_path), "resumed": True, "compute": {"steps": 600, "wall_seconds": 183.2}}
    assert "3 min 03 s of training in the last run (resumed from a checkpoint: earlier runs not counted)" in render(card)


def test_recipe_lists_exactly_the_hacks_that_are_on(train_params):
    """recipe() puts each hack the registry calls on under hacks_on (with its settings), the others under hacks_off."""
    r = recipe(train_params)
    assert set(r["hacks_on"]) == {h.name for h in HACKS if h.is_on(train_params.hacks)}
    assert set(r["hacks_off"]) == {h.name for h in HACKS} - set(r["hacks_on"])
    assert r["hacks_on"]["ema"] == {"decay": train_params.hacks.ema.decay} and r["settings"]["iterations"] == train_params.iterations


def test_an_evaluated_card_shows_the_table_and_names_the_experiment(tmp_path):
    """render() with evaluation rows gives a table instead of 'not evaluated yet'; an experiment is named with its ref."""
    card = _save(tmp_path)
    card["git"] = {"rev": "a" * 40, "experiment": "lusty-pike", "exp_ref": "refs/exps/aa/x/lusty-pike", "dirty_paths": []}
    text = render(card, evaluation=[("judge accuracy", "0.750 (95% CI 0.35-0.97)", "inconclusive: ...")],
                  written_by="the evaluate stage")
    assert "| judge accuracy | 0.750 (95% CI 0.35-0.97) | inconclusive: ... |" in text and "not evaluated yet" not in text
    assert "DVC experiment `lusty-pike` on top of commit `" + "a" * 40 in text


def test_a_conditional_card_names_its_mode_and_classes(tmp_path, train_params):
    """A conditional model's card says which mode and lists its classes; its recipe has conditional (and acgan_weight)."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, conditional="acgan", n_classes=2)
    p = dataclasses.replace(train_params, conditional="acgan")
    save_model(tmp_path, build_generator(cfg), build_discriminator(cfg), cfg, params_hash="ph", data_hash="dh", step=3,
               classes=["eForest", "dRiverLake"], train_params=p)
    text = (tmp_path / "MODEL_CARD.md").read_text()
    assert "Class-conditional (acgan" in text and "2 classes: `eForest`, `dRiverLake`" in text
    assert "conditional acgan, acgan_weight 1" in text
    assert "acgan_weight" not in recipe(train_params)["settings"] and recipe(train_params)["settings"]["conditional"] == "none"


def _conditional_card(tmp_path, classes):
    cfg = dataclasses.replace(CFG, conditional="projection", n_classes=len(classes))
    return save_model(tmp_path, build_generator(cfg), build_discriminator(cfg), cfg, params_hash="ph", data_hash="dh",
                      step=600, classes=classes)


def test_a_class_name_cannot_inject_html_into_the_rendered_card(tmp_path):
    """A class named with a leading backtick and <script> renders (markdown-it, raw HTML off) as text, not as a tag."""
    from satgan.evaluate.report import render_markdown

    card = _conditional_card(tmp_path, ["`<script>alert(1)</script>", "forest"])
    page = render_markdown(render(card, evaluation=[("judge", "1.0", "a | b <b>bold</b>")]))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<b>bold" not in page


@pytest.mark.parametrize("text", ["plain", "`lead", "trail`", "a``b", "`", " x "])
def test_code_spans_hold_any_text(text):
    """code() wraps any text so that CommonMark renders exactly that text in one <code> element."""
    from markdown_it import MarkdownIt

    from satgan.modelcard import code

    html = MarkdownIt("commonmark").render(code(text))
    assert html.count("<code>") == 1
    inner = html.split("<code>")[1].split("</code>")[0]
    assert inner == text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def test_the_card_has_hub_front_matter_and_a_how_to_use_snippet(tmp_path):
    """YAML front matter (licence, tags, pipeline_tag, model-index once evaluated) and a Python snippet on the artifact."""
    import yaml

    card = _save(tmp_path)
    text = render(card, evaluation=[("judge accuracy", "0.91", "reading")])
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["pipeline_tag"] == "unconditional-image-generation" and meta["license"] == "other"
    assert "gan" in meta["tags"] and meta["model-index"][0]["results"][0]["metrics"][0]["value"] == "0.91"
    assert "## How to use" in text and "from satgan.sample import sample" in text and "## Licence" in text
    assert "--model data/model" not in text and "dvc artifacts get <repo> generator -o generator-v1" in text
