"""The Turing test: a seeded mix of real and fake tiles, its answer key, a human quiz page,
and HYPE-infinity scoring of people's answers (Zhou et al., NeurIPS 2019).

    python -m satgan.turing score answers.json [more.json ...] --key data/eval/turing_key.json

HYPE-infinity is the human error rate on a mixed set of real and fake images: the share
of answers that call a real tile fake or a fake tile real. 0.5 means people cannot tell
them apart (guessing); 0 means every tile was classified correctly. It is reported with
a bootstrap 95% interval (evaluators resampled, then each one's answers) and split into
the error on real tiles and the error on fake tiles, since a person who answers "real"
to everything gets 50% overall but 0% on real and 100% on fake.

Honesty model of the quiz page (``quiz.html``): the page never contains the labels in
plain text. For each tile it holds ``sha256(salt|quiz_id|tile_id|label)`` only; when the
person finishes, the page hashes each answer the same way to count matches, and only then
reveals the score and which tiles were real. Someone reading the page source sees hashes,
not labels; someone determined enough to run sha256 in the browser console on the two
possible labels of each tile can recover them, because a page that can score itself
offline must be able to check an answer. So the page prevents accidental peeking, not
deliberate cheating: the authoritative score is the ``score`` command against
``turing_key.json``, a separate file you do not hand out with the page.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from satgan.cli import run_main
from satgan.errors import DataError
from satgan.fsutil import write_json_atomic, write_text_atomic
from satgan.imageops import denormalize, save_grid

KEY_FORMAT = "satgan-turing-key/1"
ANSWERS_FORMAT = "satgan-turing-answers/1"
LABELS = ("real", "fake")


@dataclass(frozen=True)
class TuringSet:
    """Mixed tiles in presentation order: ``images`` (n, C, H, W) float32 in [-1, 1],
    ``labels`` ("real"/"fake" each) and ``sources`` (index into the holdout or the samples)."""

    images: np.ndarray
    labels: tuple[str, ...]
    sources: tuple[int, ...]


def make_turing_set(real: np.ndarray, fake: np.ndarray, n_real: int, n_fake: int, seed: int) -> TuringSet:
    """Pick ``n_real`` of real (N, C, H, W) and ``n_fake`` of fake (M, C, H, W) tiles and shuffle them, seeded."""
    if real.ndim != 4 or fake.ndim != 4 or real.shape[1:] != fake.shape[1:]:
        raise DataError(f"Turing test: expected real and fake (N, C, H, W) tiles of the same size, got {real.shape} and {fake.shape}")
    if n_real > len(real) or n_fake > len(fake):
        raise DataError(
            f"Turing test: asked for {n_real} real and {n_fake} fake tiles, "
            f"but only {len(real)} held-out real and {len(fake)} generated tiles exist"
        )
    rng = np.random.default_rng(seed)
    ri = rng.choice(len(real), n_real, replace=False)
    fi = rng.choice(len(fake), n_fake, replace=False)
    items = [("real", int(i)) for i in ri] + [("fake", int(i)) for i in fi]
    order = rng.permutation(len(items))
    items = [items[i] for i in order]
    images = np.stack([np.asarray((real if lab == "real" else fake)[i], np.float32) for lab, i in items])
    return TuringSet(images=images, labels=tuple(lab for lab, _ in items), sources=tuple(i for _, i in items))


def tile_id(position: int) -> str:
    """The stable id of the tile at ``position`` in the grid and the quiz: ``t000``, ``t001``, ..."""
    return f"t{position:03d}"


def label_hash(salt: str, quiz_id: str, tid: str, label: str) -> str:
    """sha256 hex of ``salt|quiz_id|tile_id|label``: what the quiz page stores instead of a label."""
    return hashlib.sha256(f"{salt}|{quiz_id}|{tid}|{label}".encode()).hexdigest()


def make_key(ts: TuringSet, seed: int, nrow: int) -> dict[str, Any]:
    """The answer key: per tile id its label, source index and grid (row, col), plus salt and quiz id.

    Salt and quiz id are derived from the seed and the pixels, so the stage is
    reproducible while two different quizzes never share a salt.
    """
    digest = hashlib.sha256(f"{seed}|{'/'.join(ts.labels)}".encode() + ts.images.tobytes()).hexdigest()
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
    return {"format": KEY_FORMAT, "quiz_id": digest[:16], "salt": digest[16:48], "seed": seed, "nrow": nrow, "tiles": tiles}


def save_turing_grid(ts: TuringSet, path: str | Path, nrow: int) -> Path:
    """The seed's Turing test as one PNG: tiles in key order, row by row (``nrow`` per row)."""
    return save_grid(ts.images, path, nrow=nrow)


def _png_data_uri(image: np.ndarray) -> str:
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
        "tiles": [
            {"id": t["id"], "src": _png_data_uri(img), "h": label_hash(key["salt"], key["quiz_id"], t["id"], t["label"])}
            for t, img in zip(key["tiles"], ts.images)
        ],
    }
    # "</" inside a <script> block would end it early; JSON allows the escaped form.
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    template = resources.files("satgan").joinpath("quiz.html").read_text(encoding="utf-8")
    if "__QUIZ_DATA__" not in template:
        raise ValueError("quiz.html template lacks the __QUIZ_DATA__ placeholder")
    return template.replace("__QUIZ_DATA__", blob)


def write_turing_test(real: np.ndarray, fake: np.ndarray, out_dir: str | Path, n_real: int, n_fake: int, nrow: int, seed: int) -> dict[str, Path]:
    """Write turing_grid.png, turing_key.json and quiz.html into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    ts = make_turing_set(real, fake, n_real, n_fake, seed)
    key = make_key(ts, seed, nrow)
    paths = {"grid": out / "turing_grid.png", "key": out / "turing_key.json", "quiz": out / "quiz.html"}
    save_turing_grid(ts, paths["grid"], nrow)
    write_json_atomic(paths["key"], key)
    write_text_atomic(paths["quiz"], render_quiz(ts, key))
    return paths


# ----------------------------------------------------------------- scoring


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: {what} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object ({what}), got {type(doc).__name__}")
    return doc


def _field(doc: dict[str, Any], name: str, source: str) -> Any:
    if name not in doc:
        raise DataError(f"{source}: missing key {name!r}")
    return doc[name]


def load_key(path: str | Path) -> dict[str, Any]:
    """Read and check a turing_key.json written by the evaluate stage."""
    key = _read_json(Path(path), "Turing answer key")
    fmt = _field(key, "format", str(path))
    if fmt != KEY_FORMAT:
        raise DataError(f"{path}: expected a {KEY_FORMAT} answer key, got format {fmt!r}")
    for name in ("quiz_id", "tiles"):
        _field(key, name, str(path))
    return key


def answers_correctness(key: dict[str, Any], answers: dict[str, Any], source: str) -> tuple[np.ndarray, np.ndarray]:
    """One answers document -> (correct (n,) bool, is_real (n,) bool) over the tiles it answered."""
    fmt = _field(answers, "format", source)
    if fmt != ANSWERS_FORMAT:
        raise DataError(f"{source}: expected {ANSWERS_FORMAT} answers (exported by quiz.html), got format {fmt!r}")
    quiz_id = _field(answers, "quiz_id", source)
    if quiz_id != key["quiz_id"]:
        raise DataError(f"{source}: answers are for quiz {quiz_id!r} but the key is for quiz {key['quiz_id']!r}")
    given = _field(answers, "answers", source)
    if not isinstance(given, dict) or not given:
        raise DataError(f"{source}: expected a non-empty 'answers' mapping of tile id -> 'real' | 'fake'")
    truth = {t["id"]: t["label"] for t in key["tiles"]}
    correct, is_real = [], []
    for tid, ans in sorted(given.items()):
        if tid not in truth:
            raise DataError(f"{source}: tile id {tid!r} is not in the key (expected ids like {next(iter(truth))!r})")
        if ans not in LABELS:
            raise DataError(f"{source}: tile {tid}: expected 'real' or 'fake', got {ans!r}")
        correct.append(ans == truth[tid])
        is_real.append(truth[tid] == "real")
    return np.array(correct), np.array(is_real)


def hype_infinity(per_evaluator: list[tuple[np.ndarray, np.ndarray]], n_boot: int, seed: int) -> dict[str, Any]:
    """HYPE-infinity from per-evaluator (correct (n,), is_real (n,)) bool arrays.

    Returns the pooled error rate, its bootstrap 95% percentile interval (evaluators
    resampled with replacement, then each evaluator's answers; Zhou et al. 2019), and the
    error on real and on fake tiles separately (NaN when no tile of that kind was answered).
    """
    if not per_evaluator:
        raise ValueError("expected answers from at least one evaluator")
    correct = np.concatenate([c for c, _ in per_evaluator])
    real = np.concatenate([r for _, r in per_evaluator])
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        wrong = total = 0
        for e in rng.integers(0, len(per_evaluator), len(per_evaluator)):
            c = per_evaluator[e][0]
            pick = c[rng.integers(0, len(c), len(c))]
            wrong += int((~pick).sum())
            total += len(pick)
        boots[b] = wrong / total
    return {
        "hype_infinity": float((~correct).mean()),
        "ci95": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
        "error_on_real": float((~correct[real]).mean()) if real.any() else float("nan"),
        "error_on_fake": float((~correct[~real]).mean()) if (~real).any() else float("nan"),
        "n_evaluators": len(per_evaluator),
        "n_answers": int(len(correct)),
        "n_real_answers": int(real.sum()),
        "n_fake_answers": int((~real).sum()),
    }


def score_files(answer_paths: list[Path], key_path: Path, n_boot: int, seed: int) -> dict[str, Any]:
    """Score quiz.html answer exports against turing_key.json; see :func:`hype_infinity`."""
    key = load_key(key_path)
    per = [answers_correctness(key, _read_json(p, "answers file"), str(p)) for p in answer_paths]
    return hype_infinity(per, n_boot, seed)


def main(argv: list[str] | None = None) -> None:
    """``python -m satgan.turing score answers.json [...] --key turing_key.json``."""
    parser = argparse.ArgumentParser(prog="python -m satgan.turing", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sc = sub.add_parser("score", help="turn quiz answer exports into a HYPE-infinity result (JSON on stdout)")
    sc.add_argument("answers", nargs="+", type=Path, help="answers JSON files exported by quiz.html, one per person")
    sc.add_argument("--key", type=Path, required=True, help="the answer key, e.g. data/eval/turing_key.json")
    sc.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% interval")
    sc.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    sc.add_argument("--out", type=Path, default=None, help="also write the result JSON here")
    args = parser.parse_args(argv)
    if args.bootstrap < 100:
        parser.error(f"--bootstrap: expected at least 100 resamples, got {args.bootstrap}")
    result = score_files(args.answers, args.key, args.bootstrap, args.seed)
    if args.out is not None:
        write_json_atomic(args.out, result)
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    lo, hi = result["ci95"]
    print(
        f"HYPE-inf error {result['hype_infinity']:.1%} (95% CI {lo:.1%}-{hi:.1%}); "
        f"on real {result['error_on_real']:.1%}, on fake {result['error_on_fake']:.1%}; "
        f"{result['n_answers']} answers from {result['n_evaluators']} evaluator(s). 50% = indistinguishable.",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run_main(main, "turing")
