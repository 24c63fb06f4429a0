"""The human Turing test, run as HYPE (Zhou et al., NeurIPS 2019): a fresh draw of real and
fake tiles per quiz, its answer key, a self-contained quiz page, and scoring of people's answers.

    python -m satgan.evaluate.turing make --holdout data/prepared/holdout.npy --samples data/samples/samples.npy --out quiz-2
    python -m satgan.evaluate.turing score answers.json [more.json ...] --key data/eval/turing_key.json

**A fresh draw per quiz.** Which real (held-out) and fake (generated) tiles a quiz shows, and
their grid positions, are drawn from a generator seeded by the quiz id, which the key records.
The evaluate stage's quiz id is derived from its seed and the bytes of both tile sets, so a new
model (or new held-out data) gives a new quiz while a rerun of the same evaluation reproduces it
(DVC outputs stay deterministic). ``make`` draws another quiz from the same data for each new
group of people (``--quiz-id`` random by default), so nobody can carry answers over.

**The protocol.** The page offers HYPE's protocol first: one tile at a time, in a random order
drawn afresh by each evaluator's browser, answers final once given. Unlimited viewing time is
HYPE-infinity; a fixed exposure (``exposure_ms``: fixation cross, the tile for that long, then a
noise mask) is the trial of HYPE-time at one exposure. HYPE-time proper adapts the exposure per
evaluator with a staircase and reports the threshold; this page does not, so a fixed-exposure
result is "the error rate at N ms", not HYPE-time. The grid (every tile at once, also in a
per-evaluator random order) remains for quick looks. The page records the protocol in the
exported answers, and scoring never pools answers given under different protocols: each
protocol's answers are scored on their own. The page asks for a participant name and exports
``answers-<participant>.json`` holding it (older exports, ``answers.json`` without one, still
score); a file given twice (the same bytes, by sha256) is counted once, with a line saying so.
Key and answer files are read only when they are regular files of at most a few MB
(:func:`satgan.fsutil.read_regular`): a FIFO or ``/dev/zero`` is refused, not waited on.

**Scoring.** The error on fakes (fakes called real: how often the GAN fooled people) and the
error on reals (real tiles called fake) come first, each with a bootstrap 95% interval
(evaluators resampled, then each one's answers within each class). The HYPE headline is the
share of all answers that were wrong. 50% is what a coin-flipping evaluator scores, but so does
someone who answers "real" to everything: an answer set that uses a single label carries no
information about the tiles, so it is flagged and left out of every figure (listed separately).
People cannot tell fakes from reals when they call fakes real as often as they call real tiles
real; that comparison is printed in words.

**Honesty model of the page** (``quiz.html``): it never contains the labels in plain text. For
each tile it holds ``sha256(salt|quiz_id|tile_id|label)`` only; after the last answer the page
hashes each answer the same way to count matches, and only then reveals the score. Someone
reading the source sees hashes, not labels; someone running sha256 in the browser console on
the two possible labels of each tile can recover them, because a page that scores itself
offline must be able to check an answer. It stops accidental peeking, not deliberate cheating:
the authoritative score is ``score`` against ``turing_key.json``, which you do not hand out.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import secrets
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from satgan import names
from satgan.cli import refuse_pipeline_output, run_main
from satgan.errors import DataError
from satgan.fsutil import parse_json_object, read_json_bytes, sha256_bytes, write_json_atomic, write_text_atomic
from satgan.imageops import denormalize, save_grid
from satgan.params import seed_arg

KEY_FORMAT = "satgan-turing-key/2"
ANSWERS_FORMAT = "satgan-turing-answers/2"
LABELS = ("real", "fake")
MODES = ("single", "grid")
# Exposure limits the page accepts: HYPE-time's staircase spans 100-1000 ms; allow a little either side.
MIN_EXPOSURE_MS, MAX_EXPOSURE_MS = 50, 10_000
QUIZ_ID_HEX = 16
# A key of a few hundred tiles is ~100 kB and an answers export ~20 kB: 8 MB leaves room and bounds memory.
MAX_JSON_BYTES = 8 << 20
# --bootstrap: fewer resamples give no usable 95% interval; more than this only burns time (the
# interval's Monte Carlo error at 2,000 is already ~1 point; Efron & Tibshirani 1993, ch. 19).
MIN_BOOTSTRAP, MAX_BOOTSTRAP = 100, 100_000
MAX_PARTICIPANT = 64


@dataclass(frozen=True)
class TuringSet:
    """Mixed tiles in presentation order: ``images`` (n, C, H, W) float32 in [-1, 1],
    ``labels`` ("real"/"fake" each) and ``sources`` (index into the holdout or the samples)."""

    images: np.ndarray
    labels: tuple[str, ...]
    sources: tuple[int, ...]


def derive_quiz_id(real: np.ndarray, fake: np.ndarray, seed: int) -> str:
    """The evaluate stage's quiz id: ``seed`` and the bytes of both tile sets, hashed (16 hex digits).

    real (N, C, H, W), fake (M, C, H, W). The same data and seed give the same id (a rerun
    reproduces the quiz); another model's samples or another holdout give another id, hence
    another draw of tiles and positions.
    """
    h = hashlib.sha256(f"satgan-quiz|{seed}|{real.shape}|{fake.shape}|".encode())
    for arr in (real, fake):
        h.update(np.ascontiguousarray(arr, dtype=np.float32).data)
    return h.hexdigest()[:QUIZ_ID_HEX]


def new_quiz_id() -> str:
    """A random quiz id, for a fresh quiz per group of evaluators."""
    return secrets.token_hex(QUIZ_ID_HEX // 2)


def _quiz_rng(quiz_id: str) -> np.random.Generator:
    """The generator every choice of a quiz is drawn from, seeded by its id alone."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"satgan-quiz-draw|{quiz_id}".encode()).digest()[:8], "big"))


def make_turing_set(real: np.ndarray, fake: np.ndarray, n_real: int, n_fake: int, quiz_id: str) -> TuringSet:
    """Draw ``n_real`` of real (N, C, H, W) and ``n_fake`` of fake (M, C, H, W) tiles and shuffle them, seeded by ``quiz_id``."""
    if real.ndim != 4 or fake.ndim != 4 or real.shape[1:] != fake.shape[1:]:
        raise DataError(f"Turing test: expected real and fake (N, C, H, W) tiles of the same size, got {real.shape} and {fake.shape}")
    if n_real > len(real) or n_fake > len(fake):
        raise DataError(
            f"Turing test: asked for {n_real} real and {n_fake} fake tiles, "
            f"but only {len(real)} held-out real and {len(fake)} generated tiles exist"
        )
    rng = _quiz_rng(quiz_id)
    ri = rng.choice(len(real), n_real, replace=False)
    fi = rng.choice(len(fake), n_fake, replace=False)
    items = [("real", int(i)) for i in ri] + [("fake", int(i)) for i in fi]
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    images = np.stack([np.asarray((real if lab == "real" else fake)[i], np.float32) for lab, i in items])
    return TuringSet(images=images, labels=tuple(lab for lab, _ in items), sources=tuple(i for _, i in items))


def tile_id(position: int) -> str:
    """The stable id of the tile at ``position`` in the grid PNG and the key: ``t000``, ``t001``, ..."""
    return f"t{position:03d}"


def label_hash(salt: str, quiz_id: str, tid: str, label: str) -> str:
    """sha256 hex of ``salt|quiz_id|tile_id|label``: what the quiz page stores instead of a label."""
    return hashlib.sha256(f"{salt}|{quiz_id}|{tid}|{label}".encode()).hexdigest()


def make_key(ts: TuringSet, quiz_id: str, nrow: int, seed: int | None) -> dict[str, Any]:
    """The answer key: per tile id its label, source index and grid (row, col), plus quiz id and salt.

    ``seed`` is the evaluate seed the quiz id was derived from (None for a quiz made by hand).
    The salt hashes the quiz id with the pixels, so the key is reproducible from its inputs.
    """
    salt = hashlib.sha256(f"satgan-quiz-salt|{quiz_id}|".encode() + ts.images.tobytes()).hexdigest()[:32]
    tiles = [
        {
            "id": tile_id(i),
            "label": lab,
            "source": "holdout" if lab == "real" else "samples",
            "source_index": src,
            "row": i // nrow,
            "col": i % nrow,
        }
        for i, (lab, src) in enumerate(zip(ts.labels, ts.sources))
    ]
    return {"format": KEY_FORMAT, "quiz_id": quiz_id, "salt": salt, "seed": seed, "nrow": nrow,
            "draw": "numpy default_rng(sha256('satgan-quiz-draw|' + quiz_id)): real picks, fake picks, order",
            "tiles": tiles}


def save_turing_grid(ts: TuringSet, path: str | Path, nrow: int) -> Path:
    """The quiz's tiles as one PNG in key order, row by row (``nrow`` per row)."""
    return save_grid(ts.images, path, nrow=nrow)


def png_data_uri(image: np.ndarray) -> str:
    """(C, H, W) float in [-1, 1] -> ``data:image/png;base64,...``."""
    hwc = denormalize(image)
    pil = Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def render_quiz(ts: TuringSet, key: dict[str, Any]) -> str:
    """The self-contained quiz page: the template with tiles inlined as PNG data URIs and hashed labels."""
    if len(key["tiles"]) != len(ts.labels):
        raise ValueError(f"expected a key for {len(ts.labels)} tiles, got {len(key['tiles'])}")
    data = {
        "quiz_id": key["quiz_id"],
        "salt": key["salt"],
        "answers_format": ANSWERS_FORMAT,
        "exposure_limits_ms": [MIN_EXPOSURE_MS, MAX_EXPOSURE_MS],
        "tiles": [
            {"id": t["id"], "src": png_data_uri(img), "h": label_hash(key["salt"], key["quiz_id"], t["id"], t["label"])}
            for t, img in zip(key["tiles"], ts.images)
        ],
    }
    # "</" inside a <script> block would end it early; JSON allows the escaped form.
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    template = resources.files("satgan.evaluate").joinpath("quiz.html").read_text(encoding="utf-8")
    if "__QUIZ_DATA__" not in template:
        raise ValueError("quiz.html template lacks the __QUIZ_DATA__ placeholder")
    return template.replace("__QUIZ_DATA__", blob)


def write_turing_test(real: np.ndarray, fake: np.ndarray, out_dir: str | Path, n_real: int, n_fake: int, nrow: int,
                      seed: int, *, quiz_id: str | None = None) -> dict[str, Path]:
    """Write turing_grid.png, turing_key.json and quiz.html into ``out_dir``; returns their paths.

    real (N, C, H, W) and fake (M, C, H, W) float in [-1, 1]. The tiles are drawn from
    ``quiz_id``; when it is None (the evaluate stage) it is :func:`derive_quiz_id` of the data and
    ``seed``, so each new model gets a new draw and a rerun reproduces the same files.
    """
    out = Path(out_dir)
    qid = derive_quiz_id(real, fake, seed) if quiz_id is None else check_quiz_id(quiz_id, "--quiz-id")
    ts = make_turing_set(real, fake, n_real, n_fake, qid)
    key = make_key(ts, qid, nrow, seed if quiz_id is None else None)
    paths = {"grid": out / names.TURING_GRID, "key": out / names.TURING_KEY, "quiz": out / names.QUIZ}
    save_turing_grid(ts, paths["grid"], nrow)
    write_json_atomic(paths["key"], key)
    write_text_atomic(paths["quiz"], render_quiz(ts, key))
    return paths


def check_quiz_id(quiz_id: str, where: str) -> str:
    """A quiz id is 1-64 characters of letters, digits, '-' and '_' (it goes into file names and hashes)."""
    if not (isinstance(quiz_id, str) and 0 < len(quiz_id) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_") for c in quiz_id)):
        raise DataError(f"{where}: expected a quiz id of 1-64 letters, digits, '-' or '_', got {quiz_id!r}")
    return quiz_id


# ----------------------------------------------------------------- reading keys and answers


def _read_bytes(path: Path, what: str) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_JSON_BYTES`; anything else is one DataError line."""
    return read_json_bytes(path, what, MAX_JSON_BYTES)


def _read_json(path: Path, what: str, data: bytes | None = None) -> dict[str, Any]:
    """A JSON object from ``path`` (or its already-read ``data``); anything else is one DataError line naming the file."""
    return parse_json_object(_read_bytes(path, what) if data is None else data, path, what)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _get(doc: dict[str, Any], name: str, kind: type | tuple[type, ...], source: str, where: str = "") -> Any:
    """``doc[name]``, required and of ``kind`` (bool is not an int here); else a DataError naming file and field."""
    field = f"{where}{name}"
    if name not in doc:
        raise DataError(f"{source}: missing field {field!r}")
    value = doc[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise DataError(f"{source}: field {field!r}: expected {expected}, got {_type_name(value)} {value!r:.40}")
    return value


def _check_key(key: dict[str, Any], src: str) -> dict[str, Any]:
    """Every field the scorer and the report rely on, with its type; one DataError line otherwise."""
    fmt = _get(key, "format", str, src)
    if fmt != KEY_FORMAT:
        raise DataError(f"{src}: field 'format': expected {KEY_FORMAT!r} (a key written by this satgan; "
                        f"rerun `dvc repro evaluate` for an older one), got {fmt!r}")
    check_quiz_id(_get(key, "quiz_id", str, src), f"{src}: field 'quiz_id'")
    _get(key, "salt", str, src)
    _get(key, "seed", (int, type(None)), src)
    nrow = _get(key, "nrow", int, src)
    if nrow < 1:
        raise DataError(f"{src}: field 'nrow': expected an integer >= 1, got {nrow}")
    tiles = _get(key, "tiles", list, src)
    if not tiles:
        raise DataError(f"{src}: field 'tiles': expected a non-empty list, got an empty one")
    seen: set[str] = set()
    for i, t in enumerate(tiles):
        where = f"tiles[{i}]."
        if not isinstance(t, dict):
            raise DataError(f"{src}: field 'tiles[{i}]': expected an object, got {_type_name(t)}")
        tid = _get(t, "id", str, src, where)
        if tid in seen:
            raise DataError(f"{src}: field '{where}id': tile id {tid!r} appears twice")
        seen.add(tid)
        label = _get(t, "label", str, src, where)
        if label not in LABELS:
            raise DataError(f"{src}: field '{where}label': expected 'real' or 'fake', got {label!r:.40}")
        _get(t, "source", str, src, where)
        for name in ("source_index", "row", "col"):
            if _get(t, name, int, src, where) < 0:
                raise DataError(f"{src}: field '{where}{name}': expected an integer >= 0, got {t[name]}")
    return key


def load_key(path: str | Path) -> dict[str, Any]:
    """Read and check a turing_key.json: a foreign or damaged file is one DataError naming the file and field."""
    return _check_key(_read_json(Path(path), "Turing answer key"), str(path))


@dataclass(frozen=True)
class AnswerSet:
    """One evaluator's answers checked against the key: ``correct`` and ``is_real`` (n,) bool, in tile-id order."""

    source: str
    protocol: tuple[str, int | None]  # (mode, exposure_ms or None = unlimited)
    correct: np.ndarray
    is_real: np.ndarray
    said: tuple[str, ...]
    participant: str | None = None  # the name typed into the page; None in exports older than that field

    @property
    def single_label(self) -> str | None:
        """The one label used for every answer, or None when both were used."""
        used = set(self.said)
        return next(iter(used)) if len(used) == 1 else None


def protocol_text(protocol: tuple[str, int | None]) -> str:
    """``("single", None)`` -> ``one at a time, unlimited time (HYPE-infinity)``."""
    mode, exposure = protocol
    shown = "one tile at a time" if mode == "single" else "all tiles at once (grid)"
    if exposure is None:
        return f"{shown}, unlimited time" + (" (HYPE-infinity)" if mode == "single" else "")
    return f"{shown}, each shown for {exposure} ms (one fixed HYPE-time exposure, not the staircase)"


def read_answers(key: dict[str, Any], answers: dict[str, Any], source: str) -> AnswerSet:
    """One answers document exported by quiz.html, checked field by field against ``key``."""
    fmt = _get(answers, "format", str, source)
    if fmt != ANSWERS_FORMAT:
        raise DataError(f"{source}: field 'format': expected {ANSWERS_FORMAT!r} (answers exported by quiz.html), got {fmt!r:.60}")
    quiz_id = _get(answers, "quiz_id", str, source)
    if quiz_id != key["quiz_id"]:
        raise DataError(f"{source}: answers are for quiz {quiz_id!r:.70} but the key is for quiz {key['quiz_id']!r}")
    proto = _get(answers, "protocol", dict, source)
    mode = _get(proto, "mode", str, source, "protocol.")
    if mode not in MODES:
        raise DataError(f"{source}: field 'protocol.mode': expected one of {', '.join(MODES)}, got {mode!r:.40}")
    exposure = _get(proto, "exposure_ms", (int, type(None)), source, "protocol.")
    if exposure is not None and not MIN_EXPOSURE_MS <= exposure <= MAX_EXPOSURE_MS:
        raise DataError(f"{source}: field 'protocol.exposure_ms': expected {MIN_EXPOSURE_MS}-{MAX_EXPOSURE_MS} or null, got {exposure}")
    participant = None
    if "participant" in answers:
        participant = _get(answers, "participant", str, source)
        if not 0 < len(participant) <= MAX_PARTICIPANT:
            raise DataError(f"{source}: field 'participant': expected 1-{MAX_PARTICIPANT} characters, got {participant!r:.80}")
    given = _get(answers, "answers", dict, source)
    if not given:
        raise DataError(f"{source}: field 'answers': expected a mapping of tile id -> 'real' | 'fake', got an empty one")
    truth = {t["id"]: t["label"] for t in key["tiles"]}
    correct, is_real, said = [], [], []
    for tid, ans in sorted(given.items()):
        if tid not in truth:
            raise DataError(f"{source}: field 'answers': tile id {tid!r:.40} is not in the key (ids look like {next(iter(truth))!r})")
        if ans not in LABELS:
            raise DataError(f"{source}: field 'answers.{tid}': expected 'real' or 'fake', got {ans!r:.40}")
        correct.append(ans == truth[tid])
        is_real.append(truth[tid] == "real")
        said.append(ans)
    return AnswerSet(source, (mode, exposure), np.array(correct, bool), np.array(is_real, bool), tuple(said),
                     participant)


def answers_correctness(key: dict[str, Any], answers: dict[str, Any], source: str) -> tuple[np.ndarray, np.ndarray]:
    """One answers document -> (correct (n,) bool, is_real (n,) bool) over the tiles it answered."""
    a = read_answers(key, answers, source)
    return a.correct, a.is_real


# ----------------------------------------------------------------- scoring


def _error(wrong: int, total: int) -> float | None:
    return wrong / total if total else None


def _quantiles(values: list[float]) -> list[float] | None:
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))] if values else None


def hype_infinity(per_evaluator: list[tuple[np.ndarray, np.ndarray]], n_boot: int, seed: int) -> dict[str, Any]:
    """Error rates from per-evaluator (correct (n,), is_real (n,)) bool arrays, with bootstrap 95% intervals.

    ``error_on_fake`` (fakes called real), ``error_on_real`` (reals called fake) and the pooled
    ``hype_infinity`` error, each with a percentile interval: evaluators resampled with
    replacement, then each evaluator's fake and real answers resampled within their class
    (Zhou et al. 2019 resample evaluators and images). A class nobody answered gives None.
    """
    if not per_evaluator:
        raise ValueError("expected answers from at least one evaluator")
    correct = np.concatenate([c for c, _ in per_evaluator])
    real = np.concatenate([r for _, r in per_evaluator])
    rng = np.random.default_rng(seed)
    parts = [(c[r], c[~r]) for c, r in per_evaluator]  # (correct on reals, correct on fakes) per evaluator
    b_all, b_real, b_fake = [], [], []
    for _ in range(n_boot):
        w_r = n_r = w_f = n_f = 0
        for e in rng.integers(0, len(parts), len(parts)):
            cr, cf = parts[e]
            if len(cr):
                w_r += int((~cr[rng.integers(0, len(cr), len(cr))]).sum())
                n_r += len(cr)
            if len(cf):
                w_f += int((~cf[rng.integers(0, len(cf), len(cf))]).sum())
                n_f += len(cf)
        b_all.append((w_r + w_f) / (n_r + n_f))
        if n_r:
            b_real.append(w_r / n_r)
        if n_f:
            b_fake.append(w_f / n_f)
    n_real, n_fake = int(real.sum()), int((~real).sum())
    return {
        "error_on_fake": _error(int((~correct[~real]).sum()), n_fake),
        "error_on_fake_ci95": _quantiles(b_fake) if n_fake else None,
        "error_on_real": _error(int((~correct[real]).sum()), n_real),
        "error_on_real_ci95": _quantiles(b_real) if n_real else None,
        "hype_infinity": float((~correct).mean()),
        "ci95": _quantiles(b_all),
        "n_evaluators": len(per_evaluator),
        "n_answers": int(len(correct)),
        "n_real_answers": n_real,
        "n_fake_answers": n_fake,
    }


def score_answer_sets(sets: list[AnswerSet], quiz_id: str, n_boot: int, seed: int) -> dict[str, Any]:
    """Score checked answer sets: single-label sets are flagged and left out; protocols must agree."""
    protocols = sorted({a.protocol for a in sets}, key=str)
    if len(protocols) > 1:
        listing = "; ".join(f"{a.source}: {protocol_text(a.protocol)}" for a in sets)
        raise DataError(f"answers were given under different protocols ({listing}): score each protocol separately")
    informative = [a for a in sets if a.single_label is None]
    flagged = [{"file": a.source, "label": a.single_label, "n_answers": len(a.said),
                "why": f"answered {a.single_label!r} to all {len(a.said)} tiles: says nothing about the tiles "
                       "(its error is just the share of the other class), so it is left out"}
               for a in sets if a.single_label is not None]
    result: dict[str, Any] = {
        "quiz_id": quiz_id,
        "protocol": {"mode": protocols[0][0], "exposure_ms": protocols[0][1], "text": protocol_text(protocols[0])},
        "uninformative": flagged,
        "n_answer_files": len(sets),
        "participants": [a.participant or a.source for a in sets],
    }
    if informative:
        result.update(hype_infinity([(a.correct, a.is_real) for a in informative], n_boot, seed))
    else:
        result.update({"error_on_fake": None, "error_on_fake_ci95": None, "error_on_real": None,
                       "error_on_real_ci95": None, "hype_infinity": None, "ci95": None, "n_evaluators": 0,
                       "n_answers": 0, "n_real_answers": 0, "n_fake_answers": 0})
    result["reading"] = reading(result)
    return result


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _ci(ci: list[float] | None) -> str:
    return "" if ci is None else f" (95% CI {ci[0]:.1%}-{ci[1]:.1%})"


def reading(result: dict[str, Any]) -> str:
    """What the numbers mean, in words: fakes called real against reals called real."""
    if result["n_evaluators"] == 0:
        return "No informative answer set: nothing can be concluded about the fakes."
    ef, er = result["error_on_fake"], result["error_on_real"]
    if ef is None or er is None:
        return ("Only one class of tile was answered, so fooled and suspicious cannot be told apart: "
                "answer both real and fake tiles.")
    fake_ci, real_ci = result["error_on_fake_ci95"], result["error_on_real_ci95"]
    said_real_real = 1.0 - er
    base = f"People called {ef:.0%} of the fakes real and {said_real_real:.0%} of the real tiles real. "
    # People cannot tell the classes apart when "real" is said as often to fakes as to reals.
    if fake_ci[1] < 1.0 - real_ci[1]:
        return base + "The fakes were called real clearly less often than real tiles were: people can tell them apart."
    if fake_ci[0] > 1.0 - real_ci[0]:
        return base + "The fakes were called real more often than real tiles were (more 'real' than real)."
    return base + ("The two rates are not clearly different (their 95% intervals overlap): either people cannot "
                   "tell fakes from reals, or there are too few answers to show it. More evaluators narrow the intervals.")


def read_answer_files(key: dict[str, Any], answer_paths: list[Path]) -> tuple[list[AnswerSet], list[dict[str, str]]]:
    """Checked answer sets, one per distinct file content, and the files left out as copies of an earlier one.

    The same export given twice (same bytes: sha256) would count one person twice; it is read once.
    """
    sets: list[AnswerSet] = []
    duplicates: list[dict[str, str]] = []
    first: dict[str, str] = {}
    for p in answer_paths:
        data = _read_bytes(p, "answers file")
        digest = sha256_bytes(data)
        if digest in first:
            duplicates.append({"file": str(p), "same_as": first[digest]})
            continue
        first[digest] = str(p)
        sets.append(read_answers(key, _read_json(p, "answers file", data), str(p)))
    return sets, duplicates


def score_files(answer_paths: list[Path], key_path: Path, n_boot: int, seed: int) -> dict[str, Any]:
    """Score quiz.html answer exports, all given under one protocol, against turing_key.json (see :func:`score_answer_sets`)."""
    key = load_key(key_path)
    sets, duplicates = read_answer_files(key, answer_paths)
    return {**score_answer_sets(sets, key["quiz_id"], n_boot, seed), "duplicates": duplicates}


def score_by_protocol(answer_paths: list[Path], key_path: Path, n_boot: int, seed: int) -> dict[str, Any]:
    """Score the exports given under each protocol on their own: ``{"quiz_id", "by_protocol": [...], "duplicates"}``.

    Answers given one at a time and answers given on the grid (or at different exposures) measure
    different things, so each protocol gets its own :func:`score_answer_sets` result, in a fixed order.
    """
    key = load_key(key_path)
    sets, duplicates = read_answer_files(key, answer_paths)
    protocols = sorted({a.protocol for a in sets}, key=lambda p: (p[0], -1 if p[1] is None else p[1]))
    results = [score_answer_sets([a for a in sets if a.protocol == proto], key["quiz_id"], n_boot, seed)
               for proto in protocols]
    return {"quiz_id": key["quiz_id"], "by_protocol": results, "duplicates": duplicates}


def format_all(scored: dict[str, Any]) -> str:
    """:func:`score_by_protocol`'s result as text: one block per protocol, then the files counted once."""
    blocks = [format_result(r) for r in scored["by_protocol"]]
    if len(blocks) > 1:
        blocks.insert(0, f"{len(blocks)} protocols, each scored on its own (answers under different protocols "
                         "are never pooled):")
    lines = [f"  counted once: {d['file']} has the same content as {d['same_as']}" for d in scored["duplicates"]]
    return "\n\n".join(blocks) + ("\n" + "\n".join(lines) if lines else "")


def format_result(result: dict[str, Any]) -> str:
    """The score as text: both error splits first, then the headline and what it means."""
    n_files = result["n_answer_files"]
    lines = [
        f"Turing test (HYPE, Zhou et al. 2019), quiz {result['quiz_id']}: {result['protocol']['text']}",
        f"  {result['n_evaluators']} of {n_files} answer set(s) informative, {result['n_answers']} answers "
        f"({result['n_fake_answers']} on fakes, {result['n_real_answers']} on real tiles)",
        f"  participants: {', '.join(result.get('participants', [])) or 'none'}",
        "",
        f"  error on fakes  (fakes called real): {_pct(result['error_on_fake'])}{_ci(result['error_on_fake_ci95'])}"
        "   higher = the GAN fooled people more",
        f"  error on reals  (reals called fake): {_pct(result['error_on_real'])}{_ci(result['error_on_real_ci95'])}"
        "   how suspicious people were of real tiles",
        f"  HYPE error, all answers:             {_pct(result['hype_infinity'])}{_ci(result['ci95'])}",
        "",
        "  " + result["reading"],
        "  The headline is the share of all answers that were wrong. 50% is a coin flip, and also what someone",
        "  who answers one label throughout scores; it means 'indistinguishable' only when the two lines above",
        "  agree (fakes called real as often as reals). 0% = every tile classified correctly.",
    ]
    for f in result["uninformative"]:
        lines.append(f"  left out: {f['file']}: {f['why']}")
    return "\n".join(lines)


# ----------------------------------------------------------------- command line


def _load_tiles(path: Path) -> np.ndarray:
    """A prepared-contract array (holdout.npy, samples.npy) as float32 (N, C, H, W)."""
    from satgan.arrays import open_prepared

    arr, _ = open_prepared(path)
    return np.asarray(arr, np.float32)


def _pipeline_folders(params_path: Path) -> dict[str, Path]:
    """The prepared and samples folders from params.yaml's typed ``paths`` section (:class:`satgan.paths.PathsParams`)."""
    from satgan.params import load_section
    from satgan.paths import PathsParams

    paths = load_section("paths", PathsParams, params_path)
    return {"prepared": Path(paths.prepared), "samples": Path(paths.samples)}


def main(argv: list[str] | None = None, prog: str = "python -m satgan.evaluate.turing") -> None:
    """``score`` quiz answers against a key, or ``make`` a fresh quiz from the pipeline's tiles."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sc = sub.add_parser("score", help="score quiz answer exports: error on fakes, on reals, then the HYPE headline",
                        description="Score answers exported by quiz.html against the quiz's turing_key.json.")
    sc.add_argument("answers", nargs="+", type=Path, help="answers JSON files exported by quiz.html, one per person")
    sc.add_argument("--key", type=Path, required=True, help="the answer key, e.g. data/eval/turing_key.json")
    sc.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% intervals (default 2000)")
    sc.add_argument("--seed", type=seed_arg, default=0, help="seed of the bootstrap (0..2**63-1)")
    sc.add_argument("--json", action="store_true", help="print the result as JSON instead of text")
    sc.add_argument("--out", type=Path, default=None, help="also write the result JSON here")
    mk = sub.add_parser("make", help="draw a fresh quiz (new tiles, new positions) for a new group of people",
                        description="Draw a fresh quiz from held-out real tiles and generated samples: "
                                    "turing_grid.png, turing_key.json (keep it) and quiz.html (hand it out).")
    mk.add_argument("--holdout", type=Path, default=None,
                    help="held-out real tiles (default: holdout.npy in params.yaml's paths.prepared)")
    mk.add_argument("--samples", type=Path, default=None,
                    help="generated tiles (default: samples.npy in params.yaml's paths.samples)")
    mk.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file whose `paths` locate the arrays")
    mk.add_argument("--out", type=Path, required=True,
                    help="folder for the new quiz (not data/eval or another pipeline output folder: DVC owns them)")
    mk.add_argument("--quiz-id", default=None, help="the quiz id the draw is seeded from (default: a random one)")
    mk.add_argument("--n-real", type=int, default=16, help="real tiles in the quiz (default 16)")
    mk.add_argument("--n-fake", type=int, default=16, help="fake tiles in the quiz (default 16)")
    mk.add_argument("--nrow", type=int, default=8, help="tiles per row of turing_grid.png (default 8)")
    args = parser.parse_args(argv)
    if args.command == "make":
        for flag in ("n_real", "n_fake", "nrow"):
            if getattr(args, flag) < 1:
                parser.error(f"--{flag.replace('_', '-')}: expected an integer >= 1, got {getattr(args, flag)}")
        refuse_pipeline_output(args.out, "--out", args.params)
        quiz_id = args.quiz_id if args.quiz_id is not None else new_quiz_id()
        holdout, samples = args.holdout, args.samples
        if holdout is None or samples is None:
            folders = _pipeline_folders(args.params)
            holdout = holdout if holdout is not None else folders["prepared"] / names.HOLDOUT_TILES
            samples = samples if samples is not None else folders["samples"] / names.SAMPLES
        real = _load_tiles(holdout)
        fake = _load_tiles(samples)
        paths = write_turing_test(real, fake, args.out, args.n_real, args.n_fake, args.nrow, 0, quiz_id=quiz_id)
        print(f"quiz {quiz_id}: hand out {paths['quiz']}; keep {paths['key']} to score the answers")
        return
    if not MIN_BOOTSTRAP <= args.bootstrap <= MAX_BOOTSTRAP:
        parser.error(f"--bootstrap: expected {MIN_BOOTSTRAP}..{MAX_BOOTSTRAP} resamples, got {args.bootstrap}")
    result = score_by_protocol(args.answers, args.key, args.bootstrap, args.seed)
    if args.out is not None:
        try:
            write_json_atomic(args.out, result)
        except OSError as exc:
            raise DataError(f"--out {args.out}: cannot write: {exc.strerror or exc}") from None
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(format_all(result))


if __name__ == "__main__":
    run_main(main, "turing")
