"""Tests for satgan.train.data: resident vs streamed real batches, deterministic and resumable streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from satgan.train.data import RealFeed

ARRAY = np.random.default_rng(1).uniform(-1, 1, (10, 3, 8, 8)).astype(np.float16)


def _feed(budget_mb: int, per_iteration: int = 2) -> RealFeed:
    return RealFeed(ARRAY, torch.device("cpu"), batch=4, per_iteration=per_iteration, budget_mb=budget_mb,
                    channels_last=False, seed=0, rank=0)


def test_dataset_within_budget_is_resident_and_drawn_in_the_step():
    """A dataset that fits data_budget_mb is one fp32 device tensor; batch() draws random tiles from it."""
    feed = _feed(budget_mb=1)
    assert feed.resident and feed.data is not None and feed.data.data.dtype == torch.float32
    x = feed.batch(0)
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32
    assert all(any(torch.equal(row, torch.from_numpy(a.astype(np.float32))) for a in ARRAY) for row in x)


def _stream(feed: RealFeed, iterations: int) -> list[torch.Tensor]:
    feed.start()
    out = []
    for _ in range(iterations):
        feed.begin_iteration()
        out += [feed.batch(i).clone() for i in range(feed.per_iteration)]
    feed.close()
    return out


def test_streamed_batches_are_deterministic_and_resume_from_the_counter():
    """Budget 0 streams; the same seed gives the same batches, and a feed restored at a counter continues the sequence."""
    full = _stream(_feed(budget_mb=0), 3)
    assert len(full) == 6 and all(torch.equal(a, b) for a, b in zip(full, _stream(_feed(budget_mb=0), 3)))
    first = _feed(budget_mb=0)
    head = _stream(first, 1)
    resumed = _feed(budget_mb=0)
    resumed.load_state_dict(first.state_dict())
    tail = _stream(resumed, 2)
    assert first.state_dict() == {"batches_drawn": 2}
    assert all(torch.equal(a, b) for a, b in zip(head + tail, full))


def test_moderated_extra_batches_reuse_the_last_streamed_one():
    """batch(i) past this iteration's streamed batches returns the last one (moderated extra D steps)."""
    feed = _feed(budget_mb=0)
    feed.start()
    feed.begin_iteration()
    assert feed.batch(5) is feed.batch(1)
    feed.close()


@pytest.mark.parametrize("bad", [-1, "3", 2.5, True])
def test_bad_batch_counter_is_refused(bad):
    """A checkpoint's batch counter must be an integer >= 0."""
    with pytest.raises(ValueError, match="batches_drawn"):
        _feed(budget_mb=0).load_state_dict({"batches_drawn": bad})


LABELS = np.arange(10, dtype=np.int64) % 4


def _labelled_feed(budget_mb: int) -> RealFeed:
    return RealFeed(ARRAY, torch.device("cpu"), batch=4, per_iteration=2, budget_mb=budget_mb, channels_last=False,
                    seed=0, rank=0, labels=LABELS)


def _label_of(row: torch.Tensor) -> int:
    """The label of the ARRAY tile equal to ``row``."""
    (i,) = [i for i, a in enumerate(ARRAY) if torch.equal(row, torch.from_numpy(a.astype(np.float32)))]
    return int(LABELS[i])


@pytest.mark.parametrize("budget_mb", [1, 0], ids=["resident", "streamed"])
def test_labels_travel_with_their_tiles(budget_mb):
    """Resident or streamed, labelled_batch returns each tile's own label (int64, on the device) with it."""
    feed = _labelled_feed(budget_mb)
    feed.start()
    seen = 0
    for _ in range(3):
        feed.begin_iteration()
        for i in range(feed.per_iteration):
            x, y = feed.labelled_batch(i)
            assert y is not None and y.dtype == torch.int64 and y.shape == (4,)
            assert [_label_of(row) for row in x] == y.tolist()
            seen += 1
    feed.close()
    assert seen == 6
    plain = _feed(budget_mb)
    plain.start()
    plain.begin_iteration()
    assert plain.labelled_batch(0)[1] is None  # unlabelled data: no labels
    plain.close()


def test_labelled_resident_batches_draw_the_same_tiles_as_unlabelled_ones():
    """Labels cost no random draw: with the same seed a labelled feed returns the tiles an unlabelled one does."""
    torch.manual_seed(3)
    plain = _feed(budget_mb=1).batch(0)
    torch.manual_seed(3)
    labelled, _ = _labelled_feed(budget_mb=1).labelled_batch(0)
    assert torch.equal(plain, labelled)


def test_labels_must_match_the_tiles():
    """One label per tile, or a ValueError."""
    with pytest.raises(ValueError, match="9 labels for 10 tiles"):
        RealFeed(ARRAY, torch.device("cpu"), 4, 1, 1, False, 0, 0, labels=LABELS[:9])
