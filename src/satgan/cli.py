"""The ``satgan`` command, and the entry-point behaviour shared by ``stages/*.py`` and ``python -m satgan.*``.

    satgan sample --model data/model --n 64 --out grid.png
    satgan summary
    satgan quiz score alice.json bob.json --key data/eval/turing_key.json
    satgan quiz make --out quiz-2
    satgan report
    satgan ablate --dry-run

Each subcommand hands its arguments to the module it names (``python -m satgan.sample`` and
the others keep working), imported only when that subcommand runs: ``satgan --help`` does not
pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path

from satgan.errors import SatganError

# subcommand -> (module whose main(argv) it runs, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sample": ("satgan.sample", "sample tiles from a trained generator into a PNG grid (no DVC needed)"),
    "summary": ("satgan.evaluate.summary", "print the key evaluation numbers and where every output is"),
    "quiz": ("satgan.evaluate.turing", "the human Turing test: `quiz score` people's answers, `quiz make` a fresh quiz"),
    "report": ("satgan.evaluate.report", "rebuild the evaluation page into build/report/ (never the DVC-tracked data/eval)"),
    "ablate": ("satgan.ablate", "queue and run one DVC experiment per default-on GAN hack"),
}


def run_main(main: Callable[[], object], name: str) -> None:
    """Run ``main``; a :class:`SatganError` becomes ``"<name>: error: ..."`` on stderr and exit 2.

    Output piped into a reader that stops early (``satgan quiz score ... | head``) ends quietly
    with status 141 (128 + SIGPIPE, what a shell reports for a command killed by it), as the
    Python documentation advises: stdout is pointed at /dev/null so the interpreter's final
    flush cannot raise a second BrokenPipeError (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
    Any other exception is a bug in satgan and keeps its traceback.
    """
    try:
        main()
        sys.stdout.flush()  # a broken pipe surfaces here when the output was still buffered
    except SatganError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        sys.exit(141)


def pipeline_outputs(params_path: str | Path = "params.yaml") -> dict[str, Path]:
    """The pipeline's output folders (params.yaml ``paths``: raw, model, eval, ...) by key; {} without a params file.

    Every folder of that section is a DVC output (dvc.yaml templates ``${paths.*}`` into its outs),
    so a file written there by hand is overwritten by, or overwrites, what DVC tracks.
    """
    from satgan.params import read_params_file  # not satgan.paths: every stage imports this module

    params_path = Path(params_path)
    if not params_path.is_file():
        return {}
    doc = read_params_file(params_path)
    paths = doc["paths"] if "paths" in doc else None
    if not isinstance(paths, dict):
        return {}
    root = params_path.resolve().parent
    return {str(key): root / value for key, value in paths.items() if isinstance(value, str) and value.strip()}


def refuse_pipeline_output(out: Path, flag: str, params_path: str | Path = "params.yaml",
                           extra: dict[str, Path] | None = None) -> None:
    """A :class:`SatganError` when ``out`` is, or is inside, a pipeline output folder (or one of ``extra``).

    Paths are compared resolved (symlinks, ``..``), so ``data/./model/../model/x.png`` is caught too.
    """
    folders = dict(pipeline_outputs(params_path))
    folders.update(extra or {})
    target = Path(os.path.abspath(out))
    target = target.parent.resolve() / target.name if target.name else target.resolve()
    for key, folder in folders.items():
        folder = folder.resolve()
        if target == folder or target.is_relative_to(folder):
            owner = f"params.yaml paths.{key}, a DVC output" if not extra or key not in extra else key
            raise SatganError(f"{flag} {out}: inside {folder} ({owner}); write somewhere else, "
                              "e.g. a folder outside data/")


def _parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="satgan",
        usage="satgan <command> [arguments]  (satgan <command> --help for its arguments)",
        description="satgan: satellite tiles -> DCGAN -> Turing test. The pipeline itself runs with `dvc repro`; "
                    "these are the commands people run by hand.",
        epilog=f"commands:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def dispatch(argv: list[str]) -> None:
    """Run the subcommand named by ``argv[0]`` with the rest of ``argv``."""
    parser = _parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        if not argv:
            sys.exit(2)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        parser.error(f"unknown command {command!r} (expected one of: {', '.join(COMMANDS)})")
    module_name, _ = COMMANDS[command]
    module = importlib.import_module(module_name)
    # satgan's own modules take the program name, so their --help reads `satgan <command>`.
    kwargs = {"prog": f"satgan {command}"} if "prog" in inspect.signature(module.main).parameters else {}
    module.main(rest, **kwargs)


def main(argv: list[str] | None = None) -> None:
    """The ``satgan`` console script."""
    args = sys.argv[1:] if argv is None else argv
    name = f"satgan {args[0]}" if args and args[0] in COMMANDS else "satgan"
    run_main(lambda: dispatch(args), name)


if __name__ == "__main__":
    main()
