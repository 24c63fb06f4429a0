"""The commands in README.md and params.yaml's comments run as written, and dvc.lock records the committed code.

Every shell command is extracted from README's bash code blocks, from README's inline `satgan ...`
and `dvc ...` spans, and from the backticked commands in params.yaml's comments. Then:

- every `-S key=value` must name a scalar key of params.yaml, with a value of that key's type;
- every `dvc ...` command is parsed by DVC's own argument parser (the cheap half of running it);
- every `satgan ...` / `python -m satgan.<module> ...` command's options must appear in that
  command's `--help`, which is run; `satgan ablate --dry-run` runs for real;
- every `make <target>` names a Makefile target;
- what cannot run here is listed in SKIPPED with the reason, and anything else fails the test.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline_helpers import env
from satgan import cli

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = ("dvc", "satgan", "python", "make", "git", "pip", "rm", "cd", ".")
# Commands that cannot run in a test, by program, with the reason.
SKIPPED = {
    "git": "needs a remote repository (<repo-url>) or changes git state",
    "pip": "installs packages from the network",
    "cd": "shell builtin (changes directory inside a recipe)",
    ".": "shell builtin (activates the venv)",
    "rm": "deletes data (the from-scratch recipe); the dvc half of that line is checked",
}
# satgan's cheap commands, run for real (read-only, no data needed).
RUN_FOR_REAL = {("satgan", "ablate", "--dry-run")}


# ----------------------------------------------------------------- extraction


def _split(line: str) -> list[list[str]]:
    """One shell line -> its simple commands as token lists (split on && ; | ||, comments dropped).

    Placeholders such as ``<repo-url>`` become plain words (``repo-url``), not redirections.
    """
    line = re.sub(r"<([\w-]+)>", r"\1", line)
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    commands, current = [], []
    for tok in lex:
        if tok in ("&&", ";", "|", "||"):
            commands.append(current)
            current = []
        else:
            current.append(tok)
    commands.append(current)
    return [c for c in commands if c]


def readme_commands(text: str) -> list[str]:
    """Shell lines from bash code blocks (continuations joined) and runnable inline command spans."""
    lines = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                lines.append(line.strip())
    # Inline spans people copy: `satgan ...` and `dvc ...`, unless they show a placeholder or usage syntax.
    for span in re.findall(r"`((?:satgan|dvc) [^`]+)`", text):
        if not re.search(r"<|\[|\.\.\.", span):
            lines.append(span)
    return lines


def params_comment_commands(text: str) -> list[str]:
    """Backticked commands in params.yaml's comments."""
    spans = []
    for line in text.splitlines():
        if "#" in line:
            spans += re.findall(r"`([^`]+)`", line.split("#", 1)[1])
    return [s for s in spans if s.split()[0] in PROGRAMS]


def all_commands() -> list[tuple[str, list[str]]]:
    """(source, tokens) for every simple command in README.md and params.yaml comments."""
    out = []
    for source, lines in (("README.md", readme_commands((REPO / "README.md").read_text(encoding="utf-8"))),
                          ("params.yaml", params_comment_commands((REPO / "params.yaml").read_text(encoding="utf-8")))):
        out += [(source, tokens) for line in lines for tokens in _split(line)]
    return out


# ----------------------------------------------------------------- checks


def _params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def check_set_param(assignment: str, params: dict) -> str | None:
    """Why ``key=value`` (a `-S` argument) is wrong for params.yaml, or None when it names a scalar key of the right type."""
    if "=" not in assignment:
        return f"-S {assignment!r}: expected key=value"
    key, value = assignment.split("=", 1)
    node: object = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return f"-S {assignment!r}: params.yaml has no key {key!r}"
        node = node[part]
    if isinstance(node, (dict, list)):
        return f"-S {assignment!r}: {key} is a {'mapping' if isinstance(node, dict) else 'list'}, not a scalar"
    new = yaml.safe_load(value)
    numeric = (int, float)
    same = (type(new) is type(node) or (node is None) or
            (isinstance(node, numeric) and isinstance(new, numeric) and not isinstance(new, bool) and not isinstance(node, bool)))
    if not same:
        return f"-S {assignment!r}: {key} holds a {type(node).__name__}, got a {type(new).__name__}"
    return None


def set_params(tokens: list[str]) -> list[str]:
    """The values of every -S / --set-param option in ``tokens``."""
    return [tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t in ("-S", "--set-param")]


@contextlib.contextmanager
def _dvc_logs_to(sink: io.StringIO):
    """Point DVC's console handlers at ``sink`` for a while.

    ``import dvc`` binds its handlers to the ``sys.stderr`` of that moment; under pytest
    that can be an earlier test's capture stream, closed by now, and logging to it raises. The
    attribute is swapped, not ``setStream``: that flushes the old stream, which raises too.
    """
    handlers = [h for h in logging.getLogger("dvc").handlers if isinstance(h, logging.StreamHandler)]
    streams = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = sink
    try:
        yield
    finally:
        for handler, stream in zip(handlers, streams):
            handler.stream = stream


def check_dvc(tokens: list[str]) -> str | None:
    """Parse ``dvc ...`` with DVC's own parser (nothing runs); the error, or None."""
    from dvc.cli import DvcParserError
    from dvc.cli.parser import get_main_parser

    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), _dvc_logs_to(sink):
            get_main_parser().parse_args(tokens[1:])
    except (SystemExit, DvcParserError):
        lines = sink.getvalue().strip().splitlines()
        return f"dvc rejects {shlex.join(tokens)!r}: {[ln for ln in lines if 'ERROR' in ln] or lines[-1:]}"
    return None


def _satgan_argv(tokens: list[str]) -> list[str] | None:
    """``satgan a b`` or ``python -m satgan.X a b`` -> the argv for :func:`satgan.cli.main`, or None."""
    if tokens[0] == "satgan":
        return tokens[1:]
    if tokens[:2] == ["python", "-m"] and len(tokens) > 2 and tokens[2].startswith("satgan."):
        module = tokens[2].removeprefix("satgan.")
        names = {mod.removeprefix("satgan."): cmd for cmd, (mod, _) in cli.COMMANDS.items()}
        return [names[module], *tokens[3:]] if module in names else None
    return None


def _subcommand_depth(argv: list[str]) -> int:
    return 2 if argv and argv[0] == "quiz" and len(argv) > 1 and argv[1] in ("score", "make") else 1


def _cli_output(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            cli.main(argv)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue()


def check_satgan(tokens: list[str]) -> str | None:
    """Run the command's --help and check that every option it uses is documented there; run cheap ones."""
    argv = _satgan_argv(tokens)
    if argv is None or not argv or argv[0] not in cli.COMMANDS:
        return f"{shlex.join(tokens)!r}: not a satgan command (expected one of {sorted(cli.COMMANDS)})"
    depth = _subcommand_depth(argv)
    code, help_text = _cli_output([*argv[:depth], "--help"])
    if code != 0:
        return f"{shlex.join(tokens)!r}: --help exited {code}: {help_text[-200:]}"
    for opt in (t.split("=", 1)[0] for t in argv[depth:] if t.startswith("-")):
        if not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", help_text):
            return f"{shlex.join(tokens)!r}: option {opt} is not in `satgan {' '.join(argv[:depth])} --help`"
    if ("satgan", *argv) in RUN_FOR_REAL:
        code, output = _cli_output(argv)
        if code != 0:
            return f"{shlex.join(tokens)!r} exited {code}: {output[-300:]}"
    return None


def check_make(tokens: list[str]) -> str | None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    missing = [t for t in tokens[1:] if not re.search(rf"^{re.escape(t)}:", makefile, re.M)]
    return f"make: no target {missing} in the Makefile" if missing else None


def problems(commands: list[tuple[str, list[str]]]) -> list[str]:
    """Every problem found in ``commands``; commands of SKIPPED programs only get their -S checked."""
    params = _params()
    found = []
    for source, tokens in commands:
        where = f"{source}: "
        for assignment in set_params(tokens):
            if (why := check_set_param(assignment, params)) is not None:
                found.append(where + why)
        prog = tokens[0]
        if prog in SKIPPED:
            continue
        if prog == "dvc":
            why = check_dvc(tokens)
        elif prog == "make":
            why = check_make(tokens)
        elif prog in ("satgan", "python"):
            why = check_satgan(tokens)
        else:
            why = f"{shlex.join(tokens)!r}: no check for program {prog!r}: add one, or list it in SKIPPED with a reason"
        if why is not None:
            found.append(where + why)
    return found


# ----------------------------------------------------------------- tests


def test_extraction_finds_the_documented_commands():
    """The extractor sees the README's experiment, quiz and sampling commands and params.yaml's tip."""
    cmds = [shlex.join(t) for _, t in all_commands()]
    assert any(c.startswith("dvc exp run --queue") for c in cmds)
    assert any(c.startswith("satgan quiz score") for c in cmds) and any(c.startswith("satgan sample") for c in cmds)
    assert any(src == "params.yaml" and t[:3] == ["dvc", "exp", "run"] for src, t in all_commands())


def test_every_command_runs_as_written():
    """No README or params.yaml command has an unknown param key, a bad option, or a missing target."""
    assert problems(all_commands()) == []


@pytest.mark.parametrize("assignment, fragment", [
    ("train.hacks.ema=false", "is a mapping, not a scalar"),
    ("train.hacks.emma.enabled=false", "has no key"),
    ("train.iterations=many", "holds a int, got a str"),
    ("train.hacks.ema.enabled", "expected key=value"),
])
def test_set_param_check_catches_mistakes(assignment, fragment):
    """The -S checker rejects the old params.yaml tip (a mapping), typos, wrong types and a missing value."""
    assert fragment in check_set_param(assignment, _params())


def test_bad_options_are_caught():
    """An option a command does not have is reported, for dvc and for satgan."""
    found = problems([("x", ["dvc", "exp", "run", "--temporary"]), ("x", ["satgan", "quiz", "score", "a.json", "--keys", "k"])])
    assert len(found) == 2 and "dvc rejects" in found[0] and "--keys" in found[1]


def test_dvc_check_survives_a_closed_log_stream(monkeypatch):
    """DVC's handlers bound to a stream closed since (an earlier test's capture) still give the parser's error."""
    import dvc  # noqa: F401  (sets up the handlers)

    closed = io.TextIOWrapper(io.BytesIO())  # like a capture file: writing or flushing it once closed raises
    closed.close()
    for handler in logging.getLogger("dvc").handlers:
        monkeypatch.setattr(handler, "stream", closed)
    assert "unrecognized arguments: --temporary" in check_dvc(["dvc", "exp", "run", "--temporary"])


def test_unknown_programs_must_be_classified():
    """A command of a program with neither a check nor a SKIPPED reason fails instead of passing silently."""
    assert "no check for program 'curl'" in problems([("x", ["curl", "https://example.org"])])[0]


# ----------------------------------------------------------------- dvc.lock against the code

# dvc.lock is the record of the last real run: DVC rewrites it after `dvc repro`, and code can
# change between runs. A fresh clone whose lock names other code than it has reports "modified"
# and reruns everything, and README's figures no longer describe the code beside them. Requiring
# a full run for every code commit would block ordinary work (and parallel branches each rewrite
# the lock), so this check is strict where the lock must be true: on the main branch (where a
# merge refreshes it with `dvc repro`, which reruns only the stages whose code changed) and
# whenever SATGAN_CHECK_LOCK=1 (CI, a release). Elsewhere it is skipped with that reason.
# Only code and params are compared: absent data (a clone before `dvc pull`) is not staleness.
CODE_PREFIXES = ("src/", "stages/")


def _lock_check_wanted() -> tuple[bool, str]:
    forced = os.environ.get("SATGAN_CHECK_LOCK")
    if forced is not None:
        return forced == "1", f"SATGAN_CHECK_LOCK={forced}"
    branch = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return branch == "main", f"on branch {branch!r}, not main (SATGAN_CHECK_LOCK=1 forces the check)"


def stale_lock_entries(status: dict) -> list[str]:
    """From `dvc status --json`: stages whose recorded code deps, params or command differ from the tree."""
    stale = []
    for stage, changes in status.items():
        for change in changes if isinstance(changes, list) else []:
            if not isinstance(change, dict):
                stale.append(f"{stage}: {change}")  # e.g. "changed command"
                continue
            for path, state in change.get("changed deps", {}).items():
                if path.startswith(CODE_PREFIXES) and state == "modified":
                    stale.append(f"{stage}: {path}")
            if "changed params" in change:
                stale.append(f"{stage}: params {sorted(change['changed params'])}")
    return stale


def test_stale_lock_entries_ignore_missing_data():
    """Only modified code, changed params or a changed command count; deleted data and uncached outputs do not."""
    status = {"train": [{"changed deps": {"src/satgan/train/loop.py": "modified", "data/prepared": "deleted"}},
                        {"changed outs": {"data/model": "not in cache"}}, "changed command"],
              "prepare": [{"changed deps": {"data/raw": "deleted"}}],
              "evaluate": [{"changed params": {"params.yaml": {"evaluate.seed": "modified"}}}]}
    assert stale_lock_entries(status) == ["train: src/satgan/train/loop.py", "train: changed command", "evaluate: params ['params.yaml']"]


def test_dvc_lock_records_the_committed_code():
    """dvc.lock's code deps, params and commands match the tree (strict on main or with SATGAN_CHECK_LOCK=1)."""
    import json

    wanted, why = _lock_check_wanted()
    if not wanted:
        pytest.skip(f"dvc.lock freshness is checked on main only: {why}")
    proc = subprocess.run(["dvc", "status", "--json"], cwd=REPO, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    stale = stale_lock_entries(json.loads(proc.stdout or "{}"))
    assert not stale, ("dvc.lock does not record the committed code: run `dvc repro` (reruns only what changed) and "
                       "commit dvc.lock; for a change that cannot alter any output, `dvc commit -f <stage>`. Stale: "
                       + "; ".join(stale))


# ----------------------------------------------------------------- module paths named in prose

# Where satgan's own files and modules are named for readers: modules moved into packages leave these behind.
NAMING_SOURCES = ("README.md", "docs", "src", "bench", "stages", "Makefile", "dvc.yaml", "params.yaml", "pyproject.toml")
TEXT_SUFFIXES = (".md", ".py", ".html", ".yaml", ".toml", "")
FILE_NAMED = re.compile(r"(?<![\w/.])(?:src/)?(satgan/[\w/]+\.(?:py|html))")
MODULE_NAMED = re.compile(r"(?<![\w.])satgan(?:\.\w+)+")


def _naming_files(root: Path) -> list[Path]:
    """The text files under :data:`NAMING_SOURCES` that belong to the project: in a git checkout what git does not
    ignore (a benchmark's old run outputs under bench/out are not the docs); elsewhere every file."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "--", *NAMING_SOURCES], cwd=root,
                            capture_output=True, text=True)
    if listed.returncode == 0 and (root / ".git").exists():
        return sorted(root / p for p in listed.stdout.splitlines()
                      if (root / p).is_file() and (root / p).suffix in TEXT_SUFFIXES)
    files = []
    for name in NAMING_SOURCES:
        path = root / name
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        elif path.is_file():
            files.append(path)
    return files


def _defined_names(module: Path) -> set[str]:
    """The names a module's top level defines (functions, classes, assignments, imports), ``if``/``try`` bodies included."""
    import ast

    names: set[str] = set()
    body = list(ast.parse(module.read_text(encoding="utf-8")).body)
    while body:
        node = body.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.If, ast.Try)):
            body += node.body + node.orelse + getattr(node, "finalbody", []) + [s for h in getattr(node, "handlers", []) for s in h.body]
    return names


def stale_satgan_names(root: Path) -> list[str]:
    """``file: name`` for each satgan file path (``satgan/x/y.py``) or dotted name (``satgan.x.y.f``) named in
    :data:`NAMING_SOURCES` that does not exist under src/ (the longest existing module, then one name defined in it)."""
    src = root / "src"

    def module_file(parts: list[str]) -> Path | None:
        path = src.joinpath(*parts)
        return path / "__init__.py" if (path / "__init__.py").is_file() else path.with_suffix(".py") \
            if path.with_suffix(".py").is_file() else None

    stale = []
    for f in _naming_files(root):
        text = f.read_text(encoding="utf-8")
        where = f.relative_to(root)
        stale += [f"{where}: {m}" for m in sorted(set(FILE_NAMED.findall(text))) if not (src / m).is_file()]
        for dotted in sorted(set(MODULE_NAMED.findall(text))):
            parts = dotted.split(".")
            i = len(parts)
            while i > 1 and module_file(parts[:i]) is None:
                i -= 1
            if i < len(parts) and parts[i] not in _defined_names(module_file(parts[:i])):
                stale.append(f"{where}: {dotted}")
    return stale


def test_every_satgan_file_and_module_named_in_the_docs_and_sources_exists():
    """Each satgan/... file path and satgan.x.y name in README, docs, src, bench and stages exists (modules moved
    into packages, such as satgan/turing.py into satgan/evaluate/, leave none behind)."""
    assert stale_satgan_names(REPO) == []


def test_a_moved_module_is_found_by_its_old_path_and_its_old_dotted_name(tmp_path):
    """The check names a file path and a dotted name whose module is gone, and accepts ones that exist."""
    (tmp_path / "src/satgan/evaluate").mkdir(parents=True)
    (tmp_path / "src/satgan/__init__.py").write_text("")
    (tmp_path / "src/satgan/evaluate/__init__.py").write_text("")
    (tmp_path / "src/satgan/evaluate/turing.py").write_text("def write_turing_test():\n    pass\n")
    (tmp_path / "README.md").write_text("See satgan/turing.py and src/satgan/evaluate/turing.py;\n"
                                        "satgan.evaluate.turing.write_turing_test, satgan.evaluate.stage.judge_conclusive.\n")
    assert stale_satgan_names(tmp_path) == ["README.md: satgan/turing.py", "README.md: satgan.evaluate.stage.judge_conclusive"]
