"""The evaluation report: one self-contained, offline HTML page per evaluation, plus the headline.

    python -m satgan.evaluate.report            # folders from params.yaml's `paths`; writes build/report/report.html

``write_report`` reads what the pipeline already wrote and builds ``report.html`` (every image
inlined as a data URI; inline CSS, inline SVG charts and a few lines of inline JS; a
Content-Security-Policy that forbids any fetch) and ``headline.json``, the handful of figures
people compare runs by (the only file dvc.yaml declares as ``metrics:``, so ``dvc exp show``
stays narrow; the full numbers stay in ``metrics.json``). The page holds:

- the metrics, each with a one-line reading and a mark: green (as good as the real-vs-real
  baseline), amber (a difference, or too few tiles to say), red (clearly worse), grey (no
  baseline to compare with), see :func:`rate_metrics`;
- every figure against its floor, the same figure between two disjoint sets of real tiles
  (:func:`floor_rows`), and the mean radial power spectra of the fakes and of both real sets
  (``spectra.json``) as a chart;
- with labelled data, the classes: a table with one row per class (held-out and generated
  tiles, the class classifier's accuracy on each, the per-class judge, SWD and diversity) and
  a one-line reading with its mark (:func:`rate_classes`), and generate's class grid when it
  wrote one;
- the sample grid and the latent interpolation (generate);
- the fixed-noise samples dvclive saved during training, on a slider, and the loss curves from
  dvclive's TSV series (D and G losses on one chart, D(x) and D(G(z)) on one, gradient norms,
  img/s) drawn as inline SVG;
- the Turing grid with the answers behind a toggle, the closest sample/training pairs, the
  model card.

A missing or unreadable piece (no dvclive folder, no FID, a damaged key) is shown as "not
available" with the reason; it never stops the page.
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from markupsafe import Markup
from PIL import Image

from satgan import names
from satgan.cli import run_main
from satgan.errors import DataError, SatganError
from satgan.evaluate.readings import (
    FLOOR_AMBER,
    FLOOR_GREEN,
    SHARE_COLUMNS,
    adaptations,
    demo_targets,
    floor_rows,
    headline,
    number,
    rate_classes,
    rate_metrics,
)
from satgan.fsutil import read_json, write_text_atomic
from satgan.params import DEFAULT_PARAMS, changed_from_defaults

REPORT = "report.html"
HEADLINE = "headline.json"
SPECTRA = "spectra.json"  # evaluate writes the mean radial log power spectra here; the report charts them
# dvclive's layout under the live folder (dvclive 3: plots/metrics/<name>.tsv with "step\t<leaf>"
# columns, images under plots/images/<name>); train logs `train/<name>` and `samples/<step>.png`.
LIVE_METRICS_DIR = ("plots", "metrics", "train")
LIVE_SAMPLES_DIR = ("plots", "images", names.LIVE_SAMPLES)
LIVE_D_VIEW_DIR = ("plots", "images", names.LIVE_D_VIEW)  # train.d_view: the batches exactly as D got them
LIVE_SUMMARY = "metrics.json"
MAX_FRAMES = 60  # slider frames kept (evenly spaced, last included): bounds the page size
# The charts, as in dvc.yaml's top-level plots: series names are dvclive's train/<name>.
CHARTS = (
    ("Losses: D and G", (("loss_d", "D"), ("loss_g", "G"))),
    ("D(x) and D(G(z)): D's mean output on real and on fake tiles", (("d_real", "D(x)"), ("d_fake", "D(G(z))"))),
    ("Gradient norms", (("grad_norm_d", "D"), ("grad_norm_g", "G"))),
    ("Speed (images per second)", (("img_per_s", "img/s"),)),
)
COLOURS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1")


# ----------------------------------------------------------------- small readers (never raise)


class Missing(Exception):
    """A piece of the report that is not available; the message says why."""


def _read_json(path: Path) -> Any:
    """A JSON object by :func:`satgan.fsutil.read_json`, its one-line failure as :class:`Missing`."""
    try:
        return read_json(path)
    except DataError as exc:
        raise Missing(str(exc)) from None


# Images are re-encoded as lossy WebP for the page (issue 22: PNG data URIs made a default run's report ~19 MB;
# lossless WebP saves only ~10% on these photographic tiles): the figures people judge (samples, Turing grid,
# closest pairs) at FIGURE_QUALITY, the training slider's frames and D's view at FRAME_QUALITY, the frames at
# half size (the final samples are shown full size above them). The PNG files stay untouched beside the page.
# Measured on a default-size run (21 frames): ~1.1 MB in all, against 18.8 MB of PNG.
FIGURE_QUALITY = 90  # libwebp quality: at 90 no block artefacts show at 64 px tiles shown 1:1
FRAME_QUALITY = 80
FRAME_SCALE = 0.5
WEBP_METHOD = 4  # libwebp's speed/size trade-off (0 fast .. 6 slow); 6 is ~3x slower for ~1% smaller files


def _image_uri(path: Path, quality: int = FIGURE_QUALITY, scale: float = 1.0) -> str:
    """``data:image/webp;base64,...`` of a PNG file (checked by Pillow first), lossy at ``quality``, optionally
    scaled down by ``scale`` (Lanczos).
    """
    if not path.is_file():
        raise Missing(f"{path} not found")
    try:
        with Image.open(path, formats=["PNG"]) as im:
            im.verify()
        with Image.open(path, formats=["PNG"]) as im:
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise Missing(f"{path} is not a readable PNG ({exc})") from None
    if scale != 1.0:
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, "WEBP", quality=quality, method=WEBP_METHOD)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def read_series(path: Path) -> tuple[list[float], list[float]]:
    """A dvclive TSV (header ``step<TAB><name>``) -> (steps, values); rows that are not two finite numbers are skipped."""
    if not path.is_file():
        raise Missing(f"{path.name} not found")
    steps, values = [], []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = csv.reader(fh, delimiter="\t")
            header = next(rows, None)
            if header is None or len(header) < 2 or header[0] != "step":
                raise Missing(f"{path.name}: expected a dvclive series with a 'step' column")
            for row in rows:
                try:
                    x, y = float(row[0]), float(row[-1])
                except (ValueError, IndexError):
                    continue
                if math.isfinite(x) and math.isfinite(y):
                    steps.append(x)
                    values.append(y)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise Missing(f"{path.name}: unreadable ({type(exc).__name__})") from None
    if not steps:
        raise Missing(f"{path.name}: no rows")
    return steps, values


def sample_frames(folder: Path, limit: int = MAX_FRAMES) -> list[tuple[int, Path]]:
    """dvclive's ``<step>.png`` images in ``folder``, by step; at most ``limit``, evenly spaced, the last kept."""
    if not folder.is_dir():
        raise Missing(f"{folder} not found")
    frames = sorted((int(p.stem), p) for p in folder.glob("*.png") if p.stem.isdigit() and p.is_file())
    if not frames:
        raise Missing(f"no <step>.png images in {folder}")
    if len(frames) > limit:
        idx = sorted({round(i * (len(frames) - 1) / (limit - 1)) for i in range(limit)})
        frames = [frames[i] for i in idx]
    return frames




# ----------------------------------------------------------------- SVG charts


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (steps of 1, 2 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"expected finite bounds, got {lo}, {hi}")
    scale = max(abs(lo), abs(hi), 1e-12)
    if hi - lo < scale * 1e-9:  # a flat (or denormal-width) series: centre it in a visible range
        pad = scale * 0.05 if scale > 1e-12 else 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


X_TICKS = 8  # about this many x ticks asked of nice_ticks: 5 left two visible ticks on 10..5000 steps (issue 22)
# Training curves are noisy at log_every = 10: each is drawn faint with an exponential moving average on top,
# debiased as TensorBoard's scalar smoothing does (weight 0.9), once a series has enough points to need it.
SMOOTHING, SMOOTH_MIN_POINTS = 0.9, 50


def ema_smooth(ys: list[float], weight: float) -> list[float]:
    """Exponential moving average of ``ys`` with ``weight`` on the past, debiased for its start (TensorBoard's rule)."""
    out, last = [], 0.0
    for i, y in enumerate(ys, 1):
        last = last * weight + (1 - weight) * y
        out.append(last / (1 - weight**i))
    return out


def line_chart_svg(title: str, series: list[tuple[str, list[float], list[float]]], width: int = 520, height: int = 236,
                   x_label: str = "step", smooth: float = 0.0) -> str:
    """An inline SVG line chart of ``series`` [(label, xs, ys), ...] sharing x (``x_label``) and y axes.

    Hovering a line shows its label, last value and range (an SVG ``<title>``). ``smooth`` > 0: a series of at
    least :data:`SMOOTH_MIN_POINTS` points is drawn faint, with its :func:`ema_smooth` line on top.
    """
    if not series or not any(xs for _, xs, _ in series):
        raise ValueError("expected at least one non-empty series")
    left, right, top, bottom = 56, 12, 40, 36  # title at y=16, legend row at y=32, plot below
    xs_all = [x for _, xs, _ in series for x in xs]
    ys_all = [y for _, _, ys in series for y in ys]
    yt = nice_ticks(min(ys_all), max(ys_all))
    x_lo, x_hi = min(xs_all), max(xs_all)
    if x_hi <= x_lo:
        x_hi = x_lo + 1
    y_lo, y_hi = yt[0], yt[-1]
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def py(y: float) -> float:
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * ph

    e = html.escape
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}">',
             f'<text x="{left}" y="16" class="title">{e(title)}</text>']
    for t in yt:
        y = py(t)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:.4g}</text>')
    for t in nice_ticks(x_lo, x_hi, X_TICKS):
        if x_lo <= t <= x_hi:
            x = px(t)
            parts.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{t:.6g}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">{e(x_label)}</text>')
    for i, (label, xs, ys) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        hover = (f"<title>{e(label)}: {ys[-1]:.4g} at {e(x_label)} {xs[-1]:.6g} (min {min(ys):.4g}, "
                 f"max {max(ys):.4g})</title>")
        drawn = ys
        if smooth > 0 and len(ys) >= SMOOTH_MIN_POINTS:
            raw = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1" stroke-opacity="0.25" '
                         f'points="{raw}" class="raw"/>')
            drawn = ema_smooth(ys, smooth)
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, drawn))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{pts}" '
                     f'data-series="{e(label)}">{hover}</polyline>')
        lx = left + i * 130
        parts.append(f'<rect x="{lx}" y="27" width="12" height="3" fill="{colour}"/>'
                     f'<text x="{lx + 16}" y="32">{e(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------- page sections


def _na(reason: str) -> str:
    return f'<p class="na">not available: {html.escape(reason)}</p>'


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _section(title: str, body: str, sid: str) -> str:
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>'


def _metrics_section(eval_dir: Path, shown: Path) -> str:
    try:
        metrics = _read_json(eval_dir / names.METRICS)
    except Missing as exc:
        return _na(str(exc))
    try:
        fid = _read_json(eval_dir / names.FID_KID)
    except Missing:
        fid = None
    rows = []
    for r in rate_metrics(metrics if isinstance(metrics, dict) else {}, fid):
        rows.append(f'<tr class="{r.mark}"><td><span class="mark {r.mark}" title="{r.mark}"></span>{html.escape(r.name)}</td>'
                    f"<td>{html.escape(r.value)}</td><td>{html.escape(r.baseline)}</td><td>{html.escape(r.reading)}</td></tr>")
    adapted = adaptations(metrics if isinstance(metrics, dict) else {})
    note = ('<p class="note adapted">This evaluation fitted its counts to the data (asked -> used; too few tiles for '
            f'the params): {html.escape("; ".join(adapted))}.</p>' if adapted else "")
    return ('<table class="metrics"><thead><tr><th>metric</th><th>value</th><th>real-vs-real baseline</th>'
            "<th>reading</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>" + note +
            '<p class="legend"><span class="mark green"></span>as good as the baseline '
            '<span class="mark amber"></span>a difference, or too few tiles to say '
            '<span class="mark red"></span>clearly worse <span class="mark grey"></span>no baseline to compare with. '
            f"All numbers: <code>{html.escape(str(shown / names.METRICS))}</code>.</p>"
            + _floor_table(metrics if isinstance(metrics, dict) else {}) + _targets(metrics if isinstance(metrics, dict) else {})
            + _spectrum_chart(eval_dir))


def _targets(metrics: dict[str, Any]) -> str:
    """The demo targets (:func:`satgan.evaluate.readings.demo_targets`), each met (green), missed (red) or not measured."""
    rows = "".join(
        f'<tr><td><span class="mark {t.mark}"></span>{html.escape(t.name)}</td><td>{html.escape(t.wanted)}</td>'
        f"<td>{t.verdict}</td></tr>" for t in demo_targets(metrics))
    return ('<h3>Demo targets</h3><table class="targets"><thead><tr><th>figure</th><th>target</th><th>this run</th>'
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _floor_table(metrics: dict[str, Any]) -> str:
    """Every figure against its floor (:func:`floor_rows`): fakes vs the comparison reals, reals vs reals, their ratio."""
    rows = floor_rows(metrics)
    if not rows:
        return _na("no floors in metrics.json (written before evaluate measured them)")
    against = metrics.get("against", "holdout")
    body = "".join(
        f'<tr class="{r.mark}"><td><span class="mark {r.mark}" title="{r.mark}"></span>{html.escape(r.name)}</td>'
        f"<td>{r.value:.4g}</td><td>{r.floor:.4g}</td><td>{'n/a' if r.ratio is None else format(r.ratio, '.2f')}</td>"
        f"<td>{html.escape(r.reading)}</td></tr>" for r in rows)
    return (f'<h3>Each figure against its floor</h3><table class="floor"><thead><tr><th>figure</th>'
            f"<th>fakes vs {html.escape(str(against))} reals</th><th>floor: real vs real</th><th>ratio</th><th>what</th>"
            f"</tr></thead><tbody>{body}</tbody></table>"
            f'<p class="note">The floor is the same measurement between the {html.escape(str(against))} reals and as '
            f"many training reals: what a generator that sampled the real tiles would score. Distances within "
            f"{FLOOR_GREEN:g}x their floor are green, within {FLOOR_AMBER:g}x amber.</p>")


def _spectrum_chart(eval_dir: Path) -> str:
    """The mean radial log power spectra (``spectra.json``) of the fakes and both real sets, as one SVG chart."""
    try:
        doc = _read_json(eval_dir / SPECTRA)
        radius = doc["radius"]
        series = [(name, radius, ys) for name, ys in doc.items() if name != "radius"]
        chart = line_chart_svg("Mean radial power spectrum (log10 power)", series, x_label="radius (cycles per tile)")
    except Missing as exc:
        return _na(str(exc))
    except (KeyError, TypeError, ValueError) as exc:
        return _na(f"{eval_dir / SPECTRA}: unreadable ({exc})")
    return (f'<div class="charts"><div class="chart-box">{chart}</div></div><p class="note">Fakes above the reals at '
            "small radii have too much coarse contrast; below them at large radii, too little fine texture; "
            "spikes at 8, 16 or 32 cycles are the up-convolution grid (Durall et al. 2020).</p>")


def _classes_section(eval_dir: Path, samples_dir: Path) -> str:
    """The per-class table and generate's class grid; "" for unlabelled data (no ``classifier`` in metrics.json)."""
    try:
        metrics = _read_json(eval_dir / names.METRICS)
    except Missing:
        return ""
    columns, rows = rate_classes(metrics if isinstance(metrics, dict) else {})
    if not rows:
        return ""
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in ("class", *columns, "reading"))
    body = "".join(f'<tr class="{r.mark}"><td><span class="mark {r.mark}" title="{r.mark}"></span>{e(r.name)}</td>'
                   + "".join(f"<td>{e(c)}</td>" for c in r.cells) + f"<td>{e(r.reading)}</td></tr>" for r in rows)
    if columns == SHARE_COLUMNS:
        intro = ("An unconditional model: the share of held-out reals and of samples a classifier trained on the "
                 "labelled training tiles puts in each class. A class the model never makes is a dropped mode.")
    else:
        intro = ("A classifier trained on the labelled training tiles scores the held-out reals (the ceiling) and each "
                 "sample against the class it was asked for (GAN-test, Shmelkov et al. 2018). Per class the held-out "
                 "tiles are few: a judge on a handful of tiles is inconclusive, shown with its 95% interval.")
    grid_path = samples_dir / names.SAMPLES_CLASSES_DIR / names.CLASS_GRID
    grid = (_image_block(grid_path, "class grid", "One row of samples per class (generate's classes/grid.png)")
            if grid_path.is_file() else "")
    return _section("Per class", f'<p class="note">{e(intro)}</p><table class="metrics classes"><thead><tr>{head}</tr>'
                    f"</thead><tbody>{body}</tbody></table>{grid}", "classes")


def _display_width(path: Path, box: int = 420) -> int:
    """Shown width of a PNG: scaled so its longer side is about ``box`` px, never below its own size, at most 4x."""
    with Image.open(path) as im:
        w, h = im.size
    return round(w * min(4.0, max(1.0, box / max(w, h, 1))))


def _image_block(path: Path, alt: str, caption: str) -> str:
    try:
        uri = _image_uri(path)
        width = _display_width(path)
        return (f'<figure><img src="{uri}" alt="{html.escape(alt)}" style="width:{width}px">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    except Missing as exc:
        return f"<figure>{_na(str(exc))}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _training_section(live_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """The slider's markup and frames, and the charts."""
    frames: list[dict[str, Any]] = []
    try:
        found = sample_frames(live_dir.joinpath(*LIVE_SAMPLES_DIR))
        frames = [{"step": step, "src": _image_uri(p, FRAME_QUALITY, FRAME_SCALE)} for step, p in found]
    except Missing as exc:
        slider = _na(str(exc))
    if frames:
        last = len(frames) - 1
        slider = (f'<div class="slider"><input type="range" id="frame" min="0" max="{last}" value="{last}" step="1" '
                  f'aria-label="training step"> <span id="frame-step">step {frames[-1]["step"]}</span></div>'
                  f'<img id="frame-img" class="frames" src="{frames[-1]["src"]}" alt="fixed-noise samples during training">'
                  f'<p class="note">The same latent vectors at {len(frames)} points of training '
                  "(dvclive's image series; drag the slider).</p>")
    charts = []
    metrics_dir = live_dir.joinpath(*LIVE_METRICS_DIR)
    for title, members in CHARTS:
        series, missing = [], []
        for name, label in members:
            try:
                xs, ys = read_series(metrics_dir / f"{name}.tsv")
                series.append((label, xs, ys))
            except Missing as exc:
                missing.append(str(exc))
        if series:
            charts.append(f'<div class="chart-box">{line_chart_svg(title, series, smooth=SMOOTHING)}'
                          + (_na("; ".join(missing)) if missing else "") + "</div>")
        else:
            charts.append(f'<div class="chart-box"><p class="title">{html.escape(title)}</p>{_na("; ".join(missing))}</div>')
    body = slider + '<div class="charts">' + "".join(charts) + "</div>" + _d_view_block(live_dir)
    return body, frames


def _d_view_block(live_dir: Path) -> str:
    """The last batch D received (train.d_view: reals left, fakes right, after flips, DiffAugment and noise;
    Karpathy 2019, "visualize just before the net"); "not available" when train.d_view was off."""
    folder = live_dir.joinpath(*LIVE_D_VIEW_DIR)
    try:
        step, path = sample_frames(folder)[-1]
        uri = _image_uri(path, FRAME_QUALITY)
    except Missing as exc:
        return _na(f"D's view: {exc} (train.d_view off?)")
    return (f'<figure><img src="{uri}" alt="what D sees" class="frames"><figcaption>What D received at step {step}: '
            "the real batch (left) and the fake batch (right) after every augmentation, exactly as D saw them "
            "(train.d_view). Reals that look nothing like the data here mean the augmentation, not G, is wrong."
            "</figcaption></figure>")


def _turing_section(eval_dir: Path) -> str:
    from satgan.evaluate.turing import load_key

    try:
        uri = _image_uri(eval_dir / names.TURING_GRID)
        with Image.open(eval_dir / names.TURING_GRID) as im:
            width, height = im.size
    except (Missing, OSError) as exc:
        return _na(str(exc))
    try:
        key = load_key(eval_dir / names.TURING_KEY)
    except SatganError as exc:
        return f'<div class="turing">{_img(uri, "Turing grid")}</div>' + _na(f"answers: {exc}")
    nrow = key["nrow"]
    tile = (width - 2) / nrow - 2  # save_grid: 2 px padding around and between tiles
    labels = []
    for t in key["tiles"]:
        x = (2 + t["col"] * (tile + 2)) / width * 100
        y = (2 + t["row"] * (tile + 2)) / height * 100
        labels.append(f'<span class="answer {t["label"]}" style="left:{x:.3f}%;top:{y:.3f}%;'
                      f'width:{tile / width * 100:.3f}%;height:{tile / height * 100:.3f}%">{t["label"]}</span>')
    n_real = sum(t["label"] == "real" for t in key["tiles"])
    return (f'<p>{n_real} held-out real and {len(key["tiles"]) - n_real} generated tiles (quiz {html.escape(key["quiz_id"])}). '
            "Decide for each, then show the answers. People take the test one tile at a time in "
            f'<a href="{names.QUIZ}">{names.QUIZ}</a> (same folder).</p>'
            '<input type="checkbox" id="show-answers"><label for="show-answers"> show the answers</label>'
            f'<div class="turing">{_img(uri, "Turing grid")}{"".join(labels)}</div>')


def render_markdown(text: str) -> str:
    """Markdown (the model card) as HTML by markdown-it-py: CommonMark plus pipe tables, raw HTML off, so text
    from the data (a class name such as ``<script>``, a stray backtick) is shown, never run.
    """
    from markdown_it import MarkdownIt

    if text.startswith("---\n") and "\n---\n" in text[4:]:  # YAML front matter (metadata for model hubs): not shown
        text = text[4:].split("\n---\n", 1)[1]
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _card_section(eval_dir: Path, model_card_md: Path | None, shown: Path) -> str:
    """The model card rendered from its markdown (:func:`render_markdown`), and where the machine-readable card is."""
    parts = []
    if model_card_md is not None:
        if model_card_md.is_file():
            try:
                parts.append(f'<div class="card">{render_markdown(model_card_md.read_text(encoding="utf-8"))}</div>')
            except (OSError, UnicodeDecodeError) as exc:
                parts.append(_na(f"{model_card_md}: unreadable ({type(exc).__name__})"))
        else:
            parts.append(_na(f"{model_card_md} not found"))
    else:
        parts.append('<p class="note">No MODEL_CARD.md given (evaluate writes it when given the model folder).</p>')
    try:
        _read_json(eval_dir / names.EVAL_MODEL_CARD)
    except Missing as exc:
        parts.append(_na(str(exc)))
    else:
        parts.append(f'<p class="note">The machine-readable card (the model\'s identity with these metrics): '
                     f"<code>{html.escape(str(shown / names.EVAL_MODEL_CARD))}</code>.</p>")
    return "".join(parts)


def render_report(eval_dir: Path, samples_dir: Path, live_dir: Path, model_card_md: Path | None = None,
                  shown_dir: Path | None = None, params_path: Path = DEFAULT_PARAMS) -> str:
    """The whole page as a string (see the module docstring for its sections); paths shown name ``shown_dir``
    (default ``eval_dir``; evaluate renders from its staging folder); ``params_path``: the run's params file (the
    identity line lists what it changes from the defaults)."""
    shown = eval_dir if shown_dir is None else shown_dir
    training, frames = _training_section(live_dir)
    classes = _classes_section(eval_dir, samples_dir)  # "" for unlabelled data: no section, no link
    nav = [("metrics", "verdict"), *([("classes", "per class")] if classes else []), ("samples", "samples"),
           ("training", "training"), ("turing", "Turing test"), ("copies", "copying"), ("card", "model card")]
    body = "".join([
        _section("The verdict", _metrics_section(eval_dir, shown), "metrics"),
        classes,
        _section("What the model makes", _image_block(samples_dir / names.SAMPLE_GRID, "sample grid",
                 "Samples (generate's grid.png)") + _image_block(samples_dir / names.INTERPOLATION, "latent interpolation",
                 "Walking between latent vectors (spherical interpolation), one row per pair"), "samples"),
        _section("Training", training, "training"),
        _section("Turing test", _turing_section(eval_dir), "turing"),
        _section("Is it copying?", _image_block(eval_dir / names.CLOSEST_PAIRS, "closest pairs",
                 "The samples most similar to a training tile: each sample (left) beside its nearest training tile (right)"),
                 "copies"),
        _section("Model card", _card_section(eval_dir, model_card_md, shown), "card"),
    ])
    return _template().render(
        identity=run_identity(eval_dir, live_dir, params_path),
        nav=nav,
        body=Markup(body),  # every section escapes the strings it holds (html.escape / markdown-it without HTML)
        frames_json=Markup(json.dumps(frames, separators=(",", ":")).replace("</", "<\\/")),
    )


def _template() -> Any:
    """The page shell (report.html beside this module) as a jinja2 template with autoescape on."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("satgan.evaluate", "."), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template(REPORT)


MAX_CHANGED_SHOWN = 4  # params listed on the identity line; the rest as "+N more"
MAX_CHANGED_CHARS = 40  # one "key=value" longer than this is cut with "…"


def params_changed_text(changed: list[str]) -> str:
    """The identity line's "differs from defaults": the first :data:`MAX_CHANGED_SHOWN` ``key=value`` pieces (each cut
    to :data:`MAX_CHANGED_CHARS`), then "+N more"; "nothing" when there are none. Plain text (the template escapes it)."""
    if not changed:
        return "nothing"
    shown = [c if len(c) <= MAX_CHANGED_CHARS else c[:MAX_CHANGED_CHARS - 1] + "…" for c in changed[:MAX_CHANGED_SHOWN]]
    more = len(changed) - len(shown)
    return ", ".join(shown) + (f", +{more} more" if more else "")


def run_identity(eval_dir: Path, live_dir: Path, params_path: Path = DEFAULT_PARAMS) -> list[tuple[str, str]]:
    """The run at the top of the page: model step, weights, git revision and experiment (model_card.json's ``run``
    and ``model``), the last training step dvclive logged, the evaluation date, and what ``params_path`` changes from
    the defaults (:func:`satgan.params.changed_from_defaults`: the same file as committed at HEAD); pieces that are
    missing are left out. Plain strings: the template escapes them.
    """
    out: list[tuple[str, str]] = []
    try:
        card = _read_json(eval_dir / names.EVAL_MODEL_CARD)
    except Missing:
        card = {}
    model = card.get("model") if isinstance(card.get("model"), dict) else {}
    run = card.get("run") if isinstance(card.get("run"), dict) else {}
    if run.get("experiment"):
        out.append(("experiment", str(run["experiment"])))
    if number(model, "step") is not None:
        out.append(("model step", f"{number(model, 'step'):.0f}"))
    if model.get("loaded_weights"):
        out.append(("weights", str(model["loaded_weights"])))
    if run.get("git_rev"):
        out.append(("git", str(run["git_rev"])[:12] + (" (dirty)" if str(run["git_rev"]).endswith("-dirty") else "")))
    if isinstance(run.get("hacks_on"), list):
        out.append(("hacks on", ", ".join(map(str, run["hacks_on"])) or "none"))
    try:
        live = _read_json(live_dir / LIVE_SUMMARY)
        if number(live, "step") is not None:
            out.append(("trained to step", f"{number(live, 'step'):.0f}"))
    except Missing:
        pass
    out.append(("evaluated", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")))
    changed = changed_from_defaults(params_path)
    if changed is not None:
        out.append(("differs from defaults", params_changed_text(changed)))
    return out


def write_report(eval_dir: str | Path, samples_dir: str | Path, live_dir: str | Path,
                 model_card_md: str | Path | None = None, out_dir: str | Path | None = None,
                 shown_dir: str | Path | None = None, params_path: str | Path = DEFAULT_PARAMS) -> dict[str, Path]:
    """Write ``report.html`` and ``headline.json`` into ``out_dir`` (default: ``eval_dir``); returns their paths.

    Reads eval_dir (metrics.json, fid_kid.json, turing_grid.png, turing_key.json,
    closest_pairs.png, model_card.json), samples_dir (grid.png, interpolation.png, and
    classes/grid.png when generate wrote one), live_dir
    (dvclive: metrics.json, plots/metrics/train/*.tsv, plots/images/samples/*.png) and the
    optional markdown model card. Missing inputs become "not available" on the page and None
    in the headline; this function does not raise for them.
    """
    eval_dir, samples_dir, live_dir = Path(eval_dir), Path(samples_dir), Path(live_dir)
    out = Path(out_dir) if out_dir is not None else eval_dir
    card = Path(model_card_md) if model_card_md is not None else None
    paths = {"report": out / REPORT, "headline": out / HEADLINE}
    write_text_atomic(paths["report"], render_report(eval_dir, samples_dir, live_dir, card,
                                                     None if shown_dir is None else Path(shown_dir), Path(params_path)))
    try:
        metrics = _read_json(eval_dir / names.METRICS)
    except Missing:
        metrics = None
    try:
        live = _read_json(live_dir / LIVE_SUMMARY)
    except Missing:
        live = None
    # Key order is column order in `dvc exp show`: the judge first (write_json_atomic would sort).
    write_text_atomic(paths["headline"], json.dumps(headline(metrics, live), indent=2) + "\n")
    return paths


# ----------------------------------------------------------------- command line


DEFAULT_OUT = Path("build/report")  # `satgan report` writes here by default (git-ignored): never into a DVC output


def main(argv: list[str] | None = None, prog: str = "python -m satgan.evaluate.report") -> None:
    """Rebuild the report page by hand, into a folder of its own (the evaluate stage writes the tracked one).

    The page is the stage's: the eval folder's MODEL_CARD.md is included unless ``--model-card``
    names another. ``--out`` inside a pipeline output folder (``paths.eval`` included) is refused:
    overwriting the DVC-tracked ``report.html`` would make ``dvc status`` say evaluate changed. A
    metrics.json that is not an evaluation is one line and exit status 1 (:func:`satgan.evaluate.readings.check_metrics`).
    """
    from satgan.cli import refuse_pipeline_output
    from satgan.evaluate.readings import check_metrics
    from satgan.params import load_section
    from satgan.paths import PathsParams

    ap = argparse.ArgumentParser(prog=prog, description="Rebuild report.html (and headline.json) from the pipeline's "
                                 "outputs into a folder of its own: one self-contained page to open in a browser.")
    ap.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="params file whose `paths` name the folders")
    ap.add_argument("--model-card", type=Path, default=None,
                    help="a markdown model card to include (default: the eval folder's MODEL_CARD.md)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"folder to write into (default: {DEFAULT_OUT}/; never a pipeline output folder)")
    args = ap.parse_args(argv)
    paths = load_section("paths", PathsParams, args.params)
    eval_dir = Path(paths.eval)
    refuse_pipeline_output(args.out, "--out", args.params)
    if (eval_dir / names.METRICS).exists():  # before any run the page is built with every piece "not available"
        check_metrics(read_json(eval_dir / names.METRICS, "evaluate metrics"), str(eval_dir / names.METRICS))
    card = args.model_card if args.model_card is not None else eval_dir / names.MODEL_CARD_MD
    args.out.mkdir(parents=True, exist_ok=True)
    written = write_report(eval_dir, paths.samples, paths.live, card if card.is_file() or args.model_card else None,
                           args.out, shown_dir=eval_dir, params_path=args.params)
    print(f"wrote {written['report']} (open it in a browser) and {written['headline']}")


if __name__ == "__main__":
    run_main(main, "report")
