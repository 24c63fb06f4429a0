"""Shared entry-point behaviour for `stages/*.py` and `python -m satgan.*` commands."""

from __future__ import annotations

import sys
from collections.abc import Callable

from satgan.errors import SatganError


def run_main(main: Callable[[], object], name: str) -> None:
    """Run ``main``; a :class:`SatganError` becomes ``"<name>: error: ..."`` on stderr and exit 2.

    Any other exception is a bug in satgan and keeps its traceback.
    """
    try:
        main()
    except SatganError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)
