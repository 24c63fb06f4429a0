"""Running many fetches: a bounded window of futures, and the failure watch shown on the progress bar.

A bbox can plan millions of tiles: submitting one future per tile up front holds every future
(and, once done, its row) until the end. :func:`bounded_map` keeps at most ``limit`` in flight,
pulling the next work item only when a slot frees, so memory does not grow with the tile count.
:class:`FailureWatch` puts the failure count and the first error on the bar while a run goes on,
and says when so many tiles have failed that ``download.max_failed_fraction`` can no longer be
met, so the source stops planning more requests instead of failing them all first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import Any, TypeVar

from satgan.download.output import BAD, Row

T = TypeVar("T")
R = TypeVar("R")
FIRST_ERROR_CHARS = 80  # of the first error shown on the bar; the manifest has it whole


def bounded_map(pool: Executor, fn: Callable[..., R], items: Iterable[tuple[Any, ...]], limit: int) -> Iterator[R]:
    """``fn(*item)`` for every item on ``pool``, yielded as they complete, never more than ``limit`` submitted and not yet yielded.

    ``items`` is consumed lazily (a generator may stop early: what is in flight still completes
    and is yielded). Closing the iterator early cancels the queued futures.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    pending: set[Future[R]] = set()
    source = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < limit:
                item = next(source, None)
                if item is None:
                    exhausted = True
                else:
                    pending.add(pool.submit(fn, *item))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        for future in pending:
            future.cancel()


class FailureWatch:
    """Counts failed rows against the planned total; shows them on a tqdm bar; says when to stop.

    ``exhausted`` turns true once ``failed / planned > max_failed`` (the test :func:`finish`
    applies at the end): with the planned total fixed and failures only growing, the run can no
    longer succeed, so fetching the rest would only waste the server's time and the user's.
    With ``planned`` None (an archive or folder, whose size is known only at the end) it never does.
    """

    def __init__(self, planned: int | None, max_failed: float, bar: Any = None) -> None:
        self.planned, self.max_failed, self.bar = planned, max_failed, bar
        self.failed = 0
        self.first_error = ""

    def add(self, row: Row) -> None:
        """Count ``row``; a failed or refused one updates the bar's note."""
        if row.status not in BAD:
            return
        self.failed += 1
        if not self.first_error:
            self.first_error = f"{row.source}: {row.error}"
        if self.bar is not None:
            self.bar.set_postfix_str(self.note(), refresh=False)

    def note(self) -> str:
        """The bar's postfix: 'failed 3 (first: <source>: <reason>)', the error cut to a bar's width."""
        first = self.first_error
        if len(first) > FIRST_ERROR_CHARS:
            first = "..." + first[-(FIRST_ERROR_CHARS - 3):]  # the end holds the reason, the start only the host
        return f"failed {self.failed} (first: {first})"

    @property
    def exhausted(self) -> bool:
        """True once more tiles failed than ``max_failed`` of the planned ones allows."""
        return bool(self.planned) and self.failed / self.planned > self.max_failed  # type: ignore[operator]


class WatchedRows(list[Row]):
    """The manifest rows of a run: a list that reports every appended row to a :class:`FailureWatch`."""

    def __init__(self, watch: FailureWatch) -> None:
        super().__init__()
        self.watch = watch

    def append(self, row: Row) -> None:
        """Append ``row`` and count it on the watch (and so on the bar)."""
        super().append(row)
        self.watch.add(row)
