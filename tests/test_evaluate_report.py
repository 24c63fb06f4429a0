"""Tests for satgan.evaluate.report: the pure parts (series, ticks, charts) and the page in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evaluate_helpers import CHROMIUM, CHROMIUM_ARGS, LABELLED, METRICS, UNCONDITIONAL, needs_chromium
from satgan.evaluate.readings import rate_metrics
from satgan.evaluate.report import (
    HEADLINE,
    REPORT,
    SPECTRA,
    Missing,
    ema_smooth,
    line_chart_svg,
    nice_ticks,
    read_series,
    sample_frames,
    write_report,
)
from satgan.evaluate.turing import write_turing_test
from satgan.imageops import save_grid
from tiles import load_tiles

# ----------------------------------------------------------------- pure parts


def test_read_series_skips_bad_rows(tmp_path):
    """A dvclive TSV gives (steps, values); non-numeric and non-finite rows are skipped, not fatal."""
    f = tmp_path / "loss_d.tsv"
    f.write_text("step\tloss_d\n3\t0.5\nx\t1\n6\tnan\n9\t0.25\n")
    assert read_series(f) == ([3.0, 9.0], [0.5, 0.25])


def test_read_series_of_a_foreign_file_is_missing(tmp_path):
    """A file without dvclive's 'step' column is 'not available', not an exception of another kind."""
    f = tmp_path / "x.tsv"
    f.write_bytes(b"\xff\xfe binary")
    with pytest.raises(Missing):
        read_series(f)


def test_sample_frames_sort_by_step_and_keep_the_last(tmp_path):
    """Frames are ordered by numeric step (10 after 9) and thinned evenly with the last one kept."""
    for step in range(0, 100, 3):
        (tmp_path / f"{step}.png").write_bytes(b"")
    (tmp_path / "notes.png").write_bytes(b"")
    frames = sample_frames(tmp_path, limit=5)
    steps = [s for s, _ in frames]
    assert len(frames) == 5 and steps == sorted(steps) and steps[0] == 0 and steps[-1] == 99


@given(st.floats(-1e6, 1e6), st.floats(0, 1e6))
def test_nice_ticks_cover_the_range(lo, span):
    """Ticks are increasing and cover [lo, lo + span]."""
    ticks = nice_ticks(lo, lo + span)
    assert ticks == sorted(ticks) and len(ticks) >= 2
    assert ticks[0] <= lo + 1e-9 * max(1, abs(lo)) and ticks[-1] >= lo + span - 1e-9 * max(1, abs(lo + span))


def test_line_chart_puts_extremes_on_the_plot_edges():
    """The first x lands on the left edge, the last on the right, and both series are drawn."""
    svg = line_chart_svg("t", [("D", [0, 10], [0.0, 1.0]), ("G", [0, 10], [1.0, 0.0])], width=300, height=200)
    lines = re.findall(r'points="([^"]+)" data-series="(\w+)"', svg)
    assert [name for _, name in lines] == ["D", "G"]
    xs = [float(p.split(",")[0]) for p in lines[0][0].split()]
    assert xs == [56.0, 300 - 12.0]
    assert "<script" not in svg and "href" not in svg


def test_the_page_lists_the_counts_evaluate_fitted_to_the_data(run_dirs, tmp_path):
    """An adapted block with a reduced count puts an 'asked -> used' note under the metrics table."""
    ev = tmp_path / "eval"
    ev.mkdir()
    doc = {**METRICS, "adapted": {"turing_n_real": {"asked": 16, "used": 9}, "turing_n_fake": {"asked": 16, "used": 16}}}
    (ev / "metrics.json").write_text(json.dumps(doc))
    page = write_report(ev, run_dirs / "samples", run_dirs / "live")["report"].read_text()
    assert "turing_n_real: 16 -&gt; 9" in page and "turing_n_fake" not in page


def test_the_page_shows_the_floor_table_and_the_spectrum_chart(run_dirs, tmp_path):
    """report.html has the floor table (figure, fakes, floor, ratio) and the spectra chart with all three series."""
    page = write_report(run_dirs / "eval", run_dirs / "samples", run_dirs / "live", out_dir=tmp_path)["report"].read_text()
    assert '<table class="floor">' in page and "<th>floor: real vs real</th><th>ratio</th>" in page
    assert "Mean radial power spectrum" in page and all(f'data-series="{n}"' in page
                                                        for n in ("fakes", "holdout reals", "training reals"))


# ----------------------------------------------------------------- the page


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, rsscn7_files):
    """eval/, samples/ and live/ folders as a real pipeline run leaves them (live written by dvclive)."""
    from dvclive import Live

    root = tmp_path_factory.mktemp("run")
    tiles = load_tiles(rsscn7_files[::10][:24])
    ev, samples, live_dir = root / "eval", root / "samples", root / "live"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps(METRICS))
    (ev / SPECTRA).write_text(json.dumps({"radius": [1, 2, 3], "fakes": [1.0, 0.0, -2.0], "holdout reals": [0.8, 0.1, -1.0],
                                          "training reals": [0.8, 0.0, -1.1]}))
    (ev / "fid_kid.json").write_text(json.dumps({"fid": "not computed", "kid": "not computed", "reason": "no weights"}))
    (ev / "model_card.json").write_text(json.dumps({"model": {"step": 12, "git_rev": "abc"}, "architecture": {"nz": 100},
                                                    "metrics": METRICS}))
    write_turing_test(tiles[:12], tiles[12:], ev, n_real=4, n_fake=4, nrow=4, seed=0)
    save_grid(tiles[:8], ev / "closest_pairs.png", nrow=2)
    save_grid(tiles[:16], samples / "grid.png", nrow=4)
    save_grid(tiles[:10], samples / "interpolation.png", nrow=5)
    live = Live(dir=str(live_dir), resume=False, dvcyaml=False, save_dvc_exp=False)
    rng = np.random.default_rng(0)
    for step in (3, 6, 9, 12):
        live.step = step
        for name in ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "img_per_s"):
            live.log_metric(f"train/{name}", float(rng.uniform(0.1, 2)))
        live.make_summary()
        grid = ((tiles[step % 8: step % 8 + 4].transpose(0, 2, 3, 1) + 1) * 127.5).astype(np.uint8)
        live.log_image(f"samples/{step}.png", np.concatenate(list(grid), axis=1))
        live.log_image(f"d_view/{step}.png", np.concatenate(list(grid[::-1]), axis=1))
    live.end()
    return root


def test_write_report_with_every_input(run_dirs, tmp_path):
    """With a full run the page inlines every image, draws four charts and writes the headline."""
    paths = write_report(run_dirs / "eval", run_dirs / "samples", run_dirs / "live", out_dir=tmp_path)
    page = paths["report"].read_text()
    assert paths["report"] == tmp_path / REPORT and "not available" not in page
    assert page.count('<svg class="chart"') == 5 and page.count("data:image/webp;base64,") >= 5 + 4
    assert not re.search(r'(src|href)="(https?:)?//', page)
    h = json.loads((tmp_path / HEADLINE).read_text())
    assert h["step"] == 12 and h["judge_acc"] == METRICS["judge"]["accuracy"]


def test_write_report_with_nothing_says_not_available(tmp_path):
    """With no inputs at all the page is still written, every piece 'not available', the headline all null."""
    paths = write_report(tmp_path / "eval", tmp_path / "samples", tmp_path / "live", model_card_md=tmp_path / "card.md")
    page = paths["report"].read_text()
    assert page.count("not available") >= 6 and "Traceback" not in page
    assert set(json.loads(paths["headline"].read_text()).values()) == {None}


def test_the_identity_line_says_what_differs_from_the_defaults_escaped_and_capped(tmp_path):
    """The run identity names the params changed from the committed params.yaml, escaped, the first four then '+N more'."""
    (tmp_path / "params.yaml").write_text("train:\n  iterations: 700\n  lr_g: 2e-4\n  name: a\n  a: 1\n  b: 2\n  c: 3\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "params.yaml"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "defaults"]):
        subprocess.run(cmd, cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text(
        "train:\n  iterations: 300\n  lr_g: 2e-4\n  name: <b>x</b>\n  a: 5\n  b: 6\n  c: 7\n")
    page = write_report(tmp_path / "eval", tmp_path / "samples", tmp_path / "live",
                        params_path=tmp_path / "params.yaml")["report"].read_text()
    identity = re.search(r'<p class="identity">(.*?)</p>', page, re.S).group(1)
    assert ("<b>differs from defaults</b> train.iterations=300, train.name=&lt;b&gt;x&lt;/b&gt;, train.a=5, train.b=6, "
            "+1 more") in identity
    assert "<b>x</b>" not in page and "lr_g" not in identity


def test_damaged_inputs_do_not_stop_the_page(run_dirs, tmp_path):
    """A truncated PNG, a foreign Turing key and bad JSON become 'not available' lines, not exceptions."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dirs, copy)
    (copy / "samples" / "grid.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (copy / "eval" / "turing_key.json").write_text(json.dumps({"format": "satgan-turing-key/2"}))
    (copy / "eval" / "model_card.json").write_text("{oops")
    page = write_report(copy / "eval", copy / "samples", copy / "live")["report"].read_text()
    assert "grid.png is not a readable PNG" in page and "missing field" in page and "not valid JSON" in page


def test_cli_builds_the_report_from_params_paths(run_dirs, tmp_path, repo_root):
    """`python -m satgan.evaluate.report --params p.yaml` reads the folders from `paths` and writes the page."""
    import subprocess
    import sys

    import yaml

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["paths"].update({k: str(run_dirs / k) for k in ("eval", "samples", "live")})
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "satgan.evaluate.report", "--params", str(p), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / REPORT).is_file() and "open it in a browser" in proc.stdout


@needs_chromium
def test_page_renders_offline_slider_moves_answers_toggle(run_dirs, tmp_path):
    """In headless Chromium: the page renders, nothing is requested but the page, the slider swaps the image, the toggle shows the answers."""
    from playwright.sync_api import sync_playwright

    page_path = write_report(run_dirs / "eval", run_dirs / "samples", run_dirs / "live", out_dir=tmp_path)["report"]
    requested: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.route("**/*", lambda route: (requested.append(route.request.url),
                                          route.continue_() if route.request.url.startswith("file:") else route.abort()))
        page.on("request", lambda req: requested.append(req.url))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(page_path.as_uri())
        assert page.title() == "satgan evaluation report"
        assert page.locator("table.metrics tbody tr").count() == len(rate_metrics(METRICS, None))
        assert page.locator("svg.chart polyline").count() == 7 + 3  # the training charts, and the spectra of the fakes and both real sets
        natural = page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        before = page.locator("#frame-img").get_attribute("src")
        assert page.locator("#frame-step").text_content() == "step 12"
        page.focus("#frame")
        page.keyboard.press("Home")
        after = page.locator("#frame-img").get_attribute("src")
        step_label = page.locator("#frame-step").text_content()
        hidden_before = page.locator(".turing .answer").first.is_hidden()
        page.check("#show-answers")
        shown_after = page.locator(".turing .answer").first.is_visible()
        labels = page.locator(".turing .answer").all_text_contents()
        browser.close()
    assert natural and not errors
    assert after != before and after.startswith("data:image/webp") and step_label == "step 3"
    assert hidden_before and shown_after and sorted(labels) == ["fake"] * 4 + ["real"] * 4
    assert {u for u in requested if not u.startswith("data:")} == {page_path.as_uri()}


# ----------------------------------------------------------------- labelled data: the classes


def _labelled_run(run_dirs: Path, tmp_path: Path, metrics: dict, class_grid: bool) -> Path:
    """A copy of the run folders with ``metrics`` and, when asked, generate's classes/grid.png."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dirs, copy)
    (copy / "eval" / "metrics.json").write_text(json.dumps(metrics))
    if class_grid:
        tiles = load_tiles(sorted((Path(__file__).resolve().parents[2] / "shared" / "data" / "rsscn7").rglob("*.jpg"))[:4])
        save_grid(tiles, copy / "samples" / "classes" / "grid.png", nrow=2)
    return copy


def test_the_page_has_a_class_table_and_the_class_grid_only_when_written(run_dirs, tmp_path):
    """Labelled metrics add the per-class table; generate's class grid is inlined when it exists and not mentioned otherwise."""
    with_grid = _labelled_run(run_dirs, tmp_path / "a", LABELLED, class_grid=True)
    page = write_report(with_grid / "eval", with_grid / "samples", with_grid / "live")["report"].read_text()
    assert 'id="classes"' in page and page.count('<tr class="', page.index('table class="metrics classes"')) >= 2
    assert "classes/grid.png" in page and "not available" not in page
    no_grid = _labelled_run(run_dirs, tmp_path / "b", UNCONDITIONAL, class_grid=False)
    page = write_report(no_grid / "eval", no_grid / "samples", no_grid / "live")["report"].read_text()
    assert 'id="classes"' in page and "never makes this class" in page and "grid.png (" not in page
    assert "classes/grid.png" not in page
    plain = write_report(run_dirs / "eval", run_dirs / "samples", run_dirs / "live", out_dir=tmp_path)["report"].read_text()
    assert 'id="classes"' not in plain


def test_the_navigation_links_the_class_table_only_when_there_is_one(run_dirs, tmp_path):
    """Labelled metrics: the page's navigation links #classes; unlabelled: no link to a section that is not there."""
    run = _labelled_run(run_dirs, tmp_path / "a", LABELLED, class_grid=False)
    page = write_report(run / "eval", run / "samples", run / "live")["report"].read_text()
    nav = page[page.index("<nav>"):page.index("</nav>")]
    assert '<a href="#classes">per class</a>' in nav and nav.index("#metrics") < nav.index("#classes") < nav.index("#samples")
    plain = write_report(run_dirs / "eval", run_dirs / "samples", run_dirs / "live", out_dir=tmp_path)["report"].read_text()
    plain_nav = plain[plain.index("<nav>"):plain.index("</nav>")]
    assert "#classes" not in plain_nav and plain_nav.count("<a href=") == 6


@needs_chromium
def test_page_shows_the_class_table_and_grid_in_chromium(run_dirs, tmp_path):
    """In headless Chromium: one coloured row per class with its reading, and the class grid decoded."""
    from playwright.sync_api import sync_playwright

    run = _labelled_run(run_dirs, tmp_path, LABELLED, class_grid=True)
    page_path = write_report(run / "eval", run / "samples", run / "live")["report"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(page_path.as_uri())
        rows = page.locator("#classes table.classes tbody tr")
        classes = [rows.nth(i).get_attribute("class") for i in range(rows.count())]
        first_cells = rows.locator("td:first-child").all_text_contents()
        grid_ok = page.evaluate("(() => { const i = document.querySelector('#classes img'); "
                                "return i !== null && i.complete && i.naturalWidth > 0; })()")
        browser.close()
    assert not errors and classes == ["green", "red"] and first_cells == ["forest", "river"] and grid_ok


def _cli_params(run_dirs: Path, tmp_path: Path, repo_root: Path) -> Path:
    import yaml

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["paths"].update({k: str(run_dirs / k) for k in ("eval", "samples", "live")})
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    return p


def _report_cli(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "satgan.evaluate.report", *args], capture_output=True, text=True)


def test_cli_refuses_to_overwrite_the_tracked_eval_folder(run_dirs, tmp_path, repo_root):
    """`satgan report --out <paths.eval>` is refused in one line: the DVC-tracked report.html stays the stage's."""
    p = _cli_params(run_dirs, tmp_path, repo_root)
    before = (run_dirs / "eval" / REPORT).read_bytes() if (run_dirs / "eval" / REPORT).exists() else None
    proc = _report_cli("--params", str(p), "--out", str(run_dirs / "eval"))
    assert proc.returncode != 0 and "DVC output" in proc.stderr and "Traceback" not in proc.stderr
    assert ((run_dirs / "eval" / REPORT).read_bytes() if before is not None else None) == before


def test_cli_includes_the_eval_folders_model_card_by_default(run_dirs, tmp_path, repo_root):
    """Without --model-card the page includes the eval folder's MODEL_CARD.md, as the stage's page does."""
    p = _cli_params(run_dirs, tmp_path, repo_root)
    card = run_dirs / "eval" / "MODEL_CARD.md"
    card.write_text("# card of run 7\n")
    try:
        proc = _report_cli("--params", str(p), "--out", str(tmp_path / "out"))
    finally:
        card.unlink()
    assert proc.returncode == 0, proc.stderr
    assert "card of run 7" in (tmp_path / "out" / REPORT).read_text()


def test_cli_on_a_structurally_wrong_metrics_json_is_one_line(run_dirs, tmp_path, repo_root):
    """A metrics.json without the evaluation's figures: one line naming it and a non-zero exit, no page written."""
    eval_dir = tmp_path / "eval"
    shutil.copytree(run_dirs / "eval", eval_dir)
    (eval_dir / "metrics.json").write_text(json.dumps({"judge": "broken"}))
    p = _cli_params(run_dirs, tmp_path, repo_root)
    import yaml

    doc = yaml.safe_load(p.read_text())
    doc["paths"]["eval"] = str(eval_dir)
    p.write_text(yaml.safe_dump(doc))
    proc = _report_cli("--params", str(p), "--out", str(tmp_path / "out"))
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1 and "metrics.json" in proc.stderr
    assert not (tmp_path / "out" / REPORT).exists()


def test_a_default_size_run_gives_a_page_under_2_mb(rsscn7_files, tmp_path):
    """21 slider frames and D views, 64-tile grids of 64 px real tiles as at the defaults: report.html <= 2 MB (issue 22)."""
    from dvclive import Live

    tiles = load_tiles(rsscn7_files[:128], size=64)
    ev, samples, live_dir = tmp_path / "eval", tmp_path / "samples", tmp_path / "live"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps(METRICS))
    write_turing_test(tiles[:16], tiles[16:32], ev, n_real=16, n_fake=16, nrow=8, seed=0)
    save_grid(tiles[:16], ev / "closest_pairs.png", nrow=2)
    save_grid(tiles[:64], samples / "grid.png", nrow=8)
    save_grid(tiles[:60], samples / "interpolation.png", nrow=10)
    live = Live(dir=str(live_dir), resume=False, dvcyaml=False, save_dvc_exp=False)
    for i, step in enumerate(range(0, 5001, 250)):
        live.step = step
        live.log_metric("train/loss_d", 1.0 / (1 + i))
        chosen = np.roll(tiles, i * 3, axis=0)
        grid = ((chosen[:64].reshape(8, 8, 3, 64, 64).transpose(0, 3, 1, 4, 2).reshape(512, 512, 3) + 1) * 127.5)
        live.log_image(f"samples/{step}.png", grid.astype(np.uint8))
        live.log_image(f"d_view/{step}.png", np.concatenate([grid, grid[::-1]], axis=1).astype(np.uint8))
    live.end()
    page = write_report(ev, samples, live_dir)["report"]
    assert page.stat().st_size <= 2 * 1024 * 1024, page.stat().st_size


def test_a_long_noisy_series_is_smoothed_with_its_raw_line_faint():
    """With smoothing on, a 100-point series gets a faint raw line and a smoothed line whose values vary less."""
    rng = np.random.default_rng(0)
    xs = [float(10 * i) for i in range(100)]
    ys = [1.0 + float(v) for v in rng.normal(0, 0.5, 100)]
    svg = line_chart_svg("loss", [("D", xs, ys)], smooth=0.9)
    assert svg.count('class="raw"') == 1 and "<title>D: " in svg
    smoothed = ema_smooth(ys, 0.9)
    assert np.std(np.diff(smoothed)) < np.std(np.diff(ys)) and abs(smoothed[0] - ys[0]) < 1e-12


def test_charts_over_5000_steps_have_several_x_ticks():
    """Steps 10..5000 get at least four x tick labels (five ticks asked gave two)."""
    svg = line_chart_svg("loss", [("D", [10.0, 2500.0, 5000.0], [1.0, 0.5, 0.7])])
    labels = re.findall(r'text-anchor="middle">(\d+)</text>', svg)
    assert len(labels) >= 4, labels
