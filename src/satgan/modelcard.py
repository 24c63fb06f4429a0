"""The human-readable model card, ``MODEL_CARD.md``: what the model makes, from what, how, how well, and for what.

Two writers, one renderer (:func:`render`):

- the train stage (:func:`satgan.modelio.save_model`) writes ``data/model/MODEL_CARD.md`` next to
  model.json, from model.json's own fields (architecture, step, hashes, git) and the blocks it
  records when the trainer passes them: ``data`` + ``provenance`` (from the prepared sidecar),
  ``recipe`` (the train params: settings and the GAN hacks that are on) and ``compute`` (steps,
  device, wall time). The evaluation reads "not evaluated yet";
- the evaluate stage writes the same card with its evaluation to ``data/eval/MODEL_CARD.md``
  (:func:`satgan.evaluate.stage.evaluate`), shown on ``report.html``.

Sections: what it makes, training data (source, scene or area, licence of the imagery), recipe,
compute, evaluation, intended use, limitations. A piece the card does not have reads "not
recorded" with what would record it, never a guess.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from satgan import names
from satgan.fsutil import write_text_atomic

# Settings of the train section the card lists under "recipe" (the hacks are listed separately).
RECIPE_KEYS = ("iterations", "batch_size", "nz", "ngf", "ndf", "init", "conditional", "acgan_weight", "lr_g", "lr_d",
               "beta1", "beta2", "seed")
NOT_EVALUATED = ("not evaluated yet: run the evaluate stage (`dvc repro`); it writes this card with its "
                 "evaluation to data/eval/MODEL_CARD.md and shows it on data/eval/report.html")


def recipe(train_params: Any) -> dict[str, Any]:
    """The card's ``recipe`` block from the ``train`` params (a TrainParams or its dict).

    ``settings``: the keys of :data:`RECIPE_KEYS`; ``hacks_on``: each hack that is on, with its
    settings (``enabled`` dropped); ``hacks_off``: the names of the others.
    """
    plain = dataclasses.asdict(train_params) if dataclasses.is_dataclass(train_params) else dict(train_params)
    if plain.get("conditional", "none") != "acgan":
        plain.pop("acgan_weight", None)  # read only by acgan
    on: dict[str, dict[str, Any]] = {}
    off: list[str] = []
    for name, value in plain["hacks"].items():
        enabled = value if isinstance(value, bool) else bool(value["enabled"])
        if enabled:
            on[name] = {} if isinstance(value, bool) else {k: v for k, v in value.items() if k != "enabled"}
        else:
            off.append(name)
    return {"settings": {k: plain[k] for k in RECIPE_KEYS if k in plain}, "hacks_on": on, "hacks_off": off}


# The weights' licence (front matter and "Licence"): satgan's code carries no licence file, and the
# weights are derived from the training imagery, so they are offered under the imagery's terms.
WEIGHTS_LICENCE = "other"
TAGS = ("gan", "dcgan", "satellite-imagery", "remote-sensing", "unconditional-image-generation", "satgan")
PIPELINE_TAG = "unconditional-image-generation"
ARTIFACT = "generator"  # dvc.yaml's artifacts: entry that carries this card
# The artifact folder a reader fetches into (`dvc artifacts get <repo> generator -o generator-v1`): the card's
# commands name it instead of the pipeline's data/model, which the reader does not have.
FETCHED_DIR = "generator-v1"


def code(text: Any) -> str:
    """``text`` as a markdown code span nothing in it can end early (CommonMark 0.31, 6.1 "Code spans"): a fence one
    backtick longer than its longest run of backticks, padded with a space when it starts or ends with one. Rendered
    (markdown-it, raw HTML off) a class name such as ``"`<script>"`` shows as that text, never as HTML.
    """
    s = str(text).replace("\r", " ").replace("\n", " ")
    longest = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or (s.startswith(" ") and s.endswith(" ") and s.strip()) else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def cell(text: Any) -> str:
    """``text`` as one pipe-table cell: a ``|`` would start another column, a line break end the row."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def _value(v: Any) -> str:
    if isinstance(v, dict):  # a hack's nested settings (diffaugment.ada): "key value" pairs, not a Python dict
        return "(" + ", ".join(f"{k} {_value(x)}" for k, x in v.items()) + ")"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, float):
        return format(v, ".6g")
    return str(v)


def _what_it_makes(card: dict[str, Any]) -> list[str]:
    arch = card["architecture"]
    colour = "RGB" if arch["channels"] == 3 else "single-band (grey)"
    latent = "N(0, 1)" if arch["latent"] == "gaussian" else "U(-1, 1)"
    weights = "generator_ema.safetensors (the EMA of G's weights, used for sampling)" if card["ema"] else "generator.safetensors"
    lines = [
        f"{arch['image_size']}x{arch['image_size']} {colour} satellite-image tiles that imitate its training tiles "
        f"(below), from a {arch['nz']}-dimensional latent drawn from {latent}.",
        f"A DCGAN generator (Radford et al. 2016; width ngf = {arch['ngf']}, discriminator ndf = {arch['ndf']}, "
        f"{arch['norm']} norm, {arch['upsample']} upsampling). Sampling uses {weights}; the files are safetensors "
        "with model.json (never pickle).",
        f"Sample it from the folder holding this card (fetched with `dvc artifacts get <repo> {ARTIFACT} -o "
        f"{FETCHED_DIR}`; in the pipeline, data/eval/model): `satgan sample --model {FETCHED_DIR} --n 64 --out grid.png`.",
    ]
    conditional = arch.get("conditional", "none")
    if conditional != "none":
        how = ("a projection discriminator, Miyato & Koyama 2018" if conditional == "projection"
               else "an auxiliary classifier on D, AC-GAN: Odena et al. 2017")
        classes = card.get("classes") or []
        lines.append(f"Class-conditional ({conditional}: a class embedding fed to G with z, {how}) over "
                     f"{len(classes)} classes: {', '.join(code(c) for c in classes)}. Make one with `--class NAME`.")
    return lines


def _training_data(card: dict[str, Any], provenance: dict[str, Any] | None, data: dict[str, Any] | None) -> list[str]:
    lines = []
    data = data if data is not None else card["data"] if isinstance(card.get("data"), dict) else None
    prov = provenance if provenance is not None else card.get("provenance")
    if isinstance(prov, dict):
        lines.append(f"- source: {code(prov.get('source', 'unknown'))}: {prov.get('what', 'not recorded')}")
        if "area" in prov:
            lines.append(f"- area: {prov['area']}")
        if "example_url" in prov:
            lines.append(f"- server: {prov.get('server')} (e.g. {prov['example_url']})")
        if "location" in prov:
            lines.append(f"- location: {prov['location']}")
        lines.append(f"- licence of the imagery: {prov.get('licence', 'unknown')}")
    else:
        lines.append("- source, area and licence: not recorded (the prepared sidecar's provenance block did not reach "
                     "this card: rerun prepare and train with this satgan)")
    if data is not None:
        lines.append(f"- {data.get('train_tiles', '?')} training tiles at {data.get('image_size', '?')} px "
                     f"({data.get('holdout_tiles', '?')} held out for evaluation, never trained on)")
    lines.append(f"- training array sha256: `{card['data_hash']}`")
    return lines


def _recipe(card: dict[str, Any]) -> list[str]:
    rec = card.get("recipe")
    if not isinstance(rec, dict):
        return [f"- not recorded beyond the train params hash `{card['params_hash']}` (the train section of params.yaml "
                "at the code revision below)"]
    settings = ", ".join(f"{k} {_value(v)}" for k, v in rec["settings"].items())
    lines = [f"- {settings}"]
    on = rec["hacks_on"]
    lines.append("- GAN hacks on: " + ("; ".join(
        f"`{name}`" + (f" ({', '.join(f'{k} {_value(v)}' for k, v in sets.items())})" if sets else "")
        for name, sets in on.items()) if on else "none"))
    lines.append("- off: " + (", ".join(f"`{n}`" for n in rec["hacks_off"]) or "none")
                 + " (README's hack table says what each does and where it comes from)")
    lines.append(f"- train params hash `{card['params_hash']}`")
    return lines


def _compute(card: dict[str, Any]) -> list[str]:
    comp = card["compute"] if isinstance(card.get("compute"), dict) else {}
    device = f"device `{card['device']}`" if "device" in card else "a device not recorded"
    world = card.get("world_size", 1)
    line = f"- {card['step']} steps on {device}" + (f" x{world} processes (DDP)" if isinstance(world, int) and world > 1 else "")
    # untimed_steps (satgan.modelio.save_model) came with the time summed over resumed runs: a card
    # without it that resumed holds the last run's time only.
    untimed = comp.get("untimed_steps")
    if "wall_seconds" in comp:
        line += f", {_duration(float(comp['wall_seconds']))} of training"
        if card.get("resumed"):
            line += (" in all (resumed from a checkpoint: the earlier runs' time included)" if untimed is not None
                     else " in the last run (resumed from a checkpoint: earlier runs not counted)")
    elif isinstance(untimed, int) and untimed > 0:
        line += (f", training time unknown: the first {untimed} steps were trained before checkpoints recorded "
                 "their time")
        if "timed_seconds" in comp and card["step"] > untimed:
            line += f" (the other {card['step'] - untimed} took {_duration(float(comp['timed_seconds']))})"
    else:
        line += ", wall time not recorded"
    lines = [line]
    git = card.get("git")
    if isinstance(git, dict) and git.get("experiment"):
        lines.append(f"- code: DVC experiment `{git['experiment']}` on top of commit `{git.get('rev')}` "
                     f"(`dvc exp show` lists it; `dvc exp apply {git['experiment']}` restores it)")
    elif card.get("git_rev") is None:
        lines.append("- code: git revision not recorded (trained outside git, or resumed at its last step from a "
                     "checkpoint that did not record it)")
    else:
        lines.append(f"- code: git revision `{card.get('git_rev')}`")
    if isinstance(git, dict) and git.get("dirty_paths"):
        lines.append("- uncommitted changes at training time: " + ", ".join(code(p) for p in git["dirty_paths"]))
    return lines


def _evaluation(evaluation: Sequence[tuple[str, str, str]] | None, source: str | None) -> list[str]:
    if evaluation is None:
        return [NOT_EVALUATED]
    lines = ["| metric | value | reading |", "| --- | --- | --- |"]
    lines += [f"| {cell(name)} | {cell(value)} | {cell(reading)} |" for name, value, reading in evaluation]
    if source:
        lines += ["", source]
    return lines


def _use_and_limits(card: dict[str, Any], provenance: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    prov = provenance if provenance is not None else card.get("provenance")
    licence = prov.get("licence") if isinstance(prov, dict) else None
    intended = [
        "- research and teaching: how GANs learn, which training hacks matter, how to evaluate generated imagery "
        "(Turing quiz, classifier two-sample test, memorization check);",
        "- synthetic look-alike tiles for experiments where invented content is acceptable and labelled as such.",
        "",
        "Not for: maps, measurement, change detection, damage assessment or any decision about a real place. "
        "Generated tiles show no real place; never present them as real imagery.",
    ]
    arch = card["architecture"]
    limits = [
        f"- it learned one small dataset (above) for {card['step']} steps at {arch['image_size']} px: it reproduces "
        "that region's look at best and knows nothing of other regions, seasons or sensors;",
        "- a small DCGAN: expect blur, repeated textures and artefacts; check the evaluation before using samples;",
        "- samples can resemble training tiles: the memorization check (closest training tile per sample) is in "
        "the evaluation; a likely copy carries the source imagery's terms;",
        f"- derived from imagery under: {licence or 'terms not recorded'}; samples and weights may carry those terms.",
    ]
    return intended, limits


def render(card: dict[str, Any], *, provenance: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
           evaluation: Sequence[tuple[str, str, str]] | None = None, evaluation_source: str | None = None,
           written_by: str = "the train stage") -> str:
    """The markdown card of model.json ``card``; ``evaluation`` rows (metric, value, reading) or None for "not evaluated yet".

    ``provenance`` and ``data`` (``train_tiles``, ``image_size``, ``holdout_tiles``) override the
    card's own blocks (evaluate reads them from the prepared arrays the model was trained on);
    ``evaluation_source`` is a line saying where the numbers come from.
    """
    intended, limits = _use_and_limits(card, provenance)
    parts = [
        *front_matter(card, provenance, evaluation),
        "# Model card: satgan DCGAN generator",
        "",
        f"Written by {written_by} from `{names.MODEL_CARD}` (step {card['step']}). The machine-readable facts are in "
        f"`{names.MODEL_CARD}`; this card says what they mean.",
        "",
        "## What it makes", "", *"\n\n".join(_what_it_makes(card)).split("\n"), "",
        "## Training data", "", *_training_data(card, provenance, data), "",
        "## Training recipe", "", *_recipe(card), "",
        "## Compute", "", *_compute(card), "",
        "## Evaluation", "", *_evaluation(evaluation, evaluation_source), "",
        "## How to use", "", *_how_to_use(card), "",
        "## Intended use", "", *intended, "",
        "## Licence", "", *_licence(card, provenance), "",
        "## Limitations", "", *limits, "",
    ]
    return "\n".join(parts)


def front_matter(card: dict[str, Any], provenance: dict[str, Any] | None,
                 evaluation: Sequence[tuple[str, str, str]] | None) -> list[str]:
    """The card's YAML front matter (the Hugging Face model-card metadata): licence, tags, pipeline tag and, once
    evaluated, a model-index with the evaluation's figures. Every value is a JSON string (valid YAML), so no
    class or source name can break it.
    """
    prov = provenance if provenance is not None else card.get("provenance")
    source = prov.get("source") if isinstance(prov, dict) else None
    q = json.dumps
    lines = ["---", f"license: {WEIGHTS_LICENCE}", f"license_name: {q('training-imagery-terms')}",
             "library_name: pytorch", "tags:", *(f"  - {q(t)}" for t in TAGS), f"pipeline_tag: {PIPELINE_TAG}"]
    if source:
        lines.append(f"datasets:\n  - {q(str(source))}")
    if evaluation:
        lines += ["model-index:", f"  - name: {q('satgan-dcgan-' + str(card['step']))}", "    results:",
                  "      - task:", f"          type: {PIPELINE_TAG}", "        metrics:"]
        lines += [f"          - name: {q(str(name))}\n            type: {q(str(name))}\n            value: {q(str(value))}"
                  for name, value, _ in evaluation]
    return [*lines, "---", ""]


def _how_to_use(card: dict[str, Any]) -> list[str]:
    """Fetching the artifact, and sampling it from Python and the command line."""
    cls = ', classes=["<class>"]' if card["architecture"].get("conditional", "none") != "none" else ""
    return [
        f"Fetch it: `dvc artifacts get <repo> {ARTIFACT} -o {FETCHED_DIR}` (or `--rev <tag>` for a release). Then:",
        "",
        "```python",
        "from pathlib import Path",
        "from satgan.sample import sample",
        "",
        f"tiles = sample(Path({q_py(FETCHED_DIR)}), n=16, seed=0{cls})  # (16, C, H, W) float32 in [-1, 1]",
        "images = ((tiles + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()  # (16, H, W, C) uint8",
        "```",
        "",
        f"or on the command line: `satgan sample --model {FETCHED_DIR} --n 64 --out grid.png`.",
    ]


def q_py(text: str) -> str:
    """A Python string literal of ``text``."""
    return repr(text)


def _licence(card: dict[str, Any], provenance: dict[str, Any] | None) -> list[str]:
    prov = provenance if provenance is not None else card.get("provenance")
    terms = prov.get("licence") if isinstance(prov, dict) else None
    return [f"The weights are derived from the training imagery and are offered under its terms: "
            f"{terms or 'not recorded (check the imagery source before sharing them)'}. The satgan code that made "
            "them is not part of this artifact."]


def write(folder: str | Path, card: dict[str, Any], **kwargs: Any) -> Path:
    """Write ``<folder>/MODEL_CARD.md`` (atomically) from :func:`render` with ``kwargs``; returns its path."""
    path = Path(folder) / names.MODEL_CARD_MD
    write_text_atomic(path, render(card, **kwargs))
    return path
