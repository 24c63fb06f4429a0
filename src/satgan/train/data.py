"""Real batches for the trainer: the whole dataset resident on the device, or streamed from the memmap.

:class:`RealFeed` picks one by ``train.data_budget_mb`` and hides the difference from the step:
``begin_iteration()`` on the host before each iteration, ``batch(i)`` inside it. With class
labels (a conditional model), each tile's label travels with it: ``labelled_batch(i)`` returns
the images and their int64 labels, both on the device, drawn by the same indices.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any

import numpy as np
import torch


def labels_tensor(labels: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    """int64 class labels (one per tile) as a device tensor; None stays None (unlabelled)."""
    return None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)


class ResidentData:
    """The whole dataset (and its labels) as device tensors; batches are drawn inside the step (graph-safe)."""

    def __init__(self, array: np.ndarray, device: torch.device, channels_last: bool,
                 labels: np.ndarray | None = None) -> None:
        t = torch.from_numpy(np.array(array))  # a writable in-memory copy of the memmap
        # fp16 halves GPU memory and is cast in the step; CPUs are slow at fp16, so keep fp32 there
        t = t.to(device=device, dtype=torch.float16 if device.type == "cuda" else torch.float32)
        self.data = t.contiguous(memory_format=torch.channels_last) if channels_last else t
        self.labels = labels_tensor(labels, device)

    def sample(self, batch: int) -> torch.Tensor:
        return self.sample_labelled(batch)[0]

    def sample_labelled(self, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``batch`` random tiles (float32) and their labels (int64; None without labels), by the same indices."""
        idx = torch.randint(0, self.data.shape[0], (batch,), device=self.data.device)
        labels = self.labels.index_select(0, idx) if self.labels is not None else None
        return self.data.index_select(0, idx).float(), labels


class StreamingData:
    """Batches gathered from the memmap by a background thread into pinned memory.

    Batch ``k`` uses indices from ``numpy.random.default_rng([seed, rank, k])``, so the
    sequence is deterministic and resumable from the checkpointed batch counter ``k``. With
    ``labels`` (an in-memory int64 array, one per tile) each batch carries its tiles' labels.
    """

    def __init__(self, array: np.ndarray, device: torch.device, batch: int, seed: int, rank: int, start: int,
                 labels: np.ndarray | None = None) -> None:
        self.array, self.device, self.batch, self.seed, self.rank = array, device, batch, seed, rank
        self.labels = labels
        self.drawn = start
        self._queue: queue.Queue[tuple[torch.Tensor, torch.Tensor | None]] = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(start,), daemon=True)
        self._thread.start()

    def _fill(self, k: int) -> None:
        pin = self.device.type == "cuda"
        while not self._stop.is_set():
            idx = np.sort(np.random.default_rng([self.seed, self.rank, k]).integers(0, len(self.array), self.batch))
            t = torch.from_numpy(np.asarray(self.array[idx], dtype=np.float32))
            y = torch.from_numpy(np.asarray(self.labels[idx], dtype=np.int64)) if self.labels is not None else None
            self._queue.put((t.pin_memory(), y.pin_memory() if y is not None else None) if pin else (t, y))
            k += 1

    def next(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next batch on the device: images and their labels (None without labels)."""
        self.drawn += 1
        t, y = self._queue.get()
        return t.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True) if y is not None else None

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()


class RealFeed:
    """This iteration's real batches, resident or streamed; a checkpoint part (the streamed-batch counter).

    Resident when the dataset fits ``budget_mb`` on the device (fp16 on CUDA, fp32 on a CPU):
    ``batch(i)`` draws random tiles inside the step. Otherwise :meth:`start` launches a
    :class:`StreamingData` thread from the restored counter, :meth:`begin_iteration` copies
    ``per_iteration`` streamed batches into fixed device buffers (so a captured graph reads
    the same addresses) and ``batch(i)`` returns buffer ``i``. ``labels`` (int64, one per tile;
    None for unconditional training) are kept on the device either way (8 bytes a tile) and
    travel with their tiles: :meth:`labelled_batch`.
    """

    def __init__(self, array: np.ndarray, device: torch.device, batch: int, per_iteration: int, budget_mb: int,
                 channels_last: bool, seed: int, rank: int, labels: np.ndarray | None = None) -> None:
        self.array, self.device, self.batch_size, self.per_iteration = array, device, batch, per_iteration
        self.seed, self.rank = seed, rank
        if labels is not None and len(labels) != len(array):
            raise ValueError(f"{len(labels)} labels for {len(array)} tiles")
        self.labels = labels
        item = 2 if device.type == "cuda" else 4
        self.resident = array.size * item <= budget_mb * 2**20
        self.data = ResidentData(array, device, channels_last, labels) if self.resident else None
        self.stream: StreamingData | None = None
        self.buffers: list[torch.Tensor] = []
        self.label_buffers: list[torch.Tensor] = []
        self.drawn = 0  # streamed batches consumed so far: where a resumed stream continues

    def start(self) -> None:
        """Streaming only: start the prefetch thread at the current counter (call after restoring a checkpoint)."""
        if not self.resident and self.stream is None:
            self.stream = StreamingData(self.array, self.device, self.batch_size, self.seed, self.rank, self.drawn,
                                        self.labels)
            shape = (self.batch_size, *self.array.shape[1:])
            self.buffers = [torch.empty(shape, device=self.device) for _ in range(self.per_iteration)]
            if self.labels is not None:
                self.label_buffers = [torch.empty(self.batch_size, dtype=torch.int64, device=self.device)
                                      for _ in range(self.per_iteration)]

    def begin_iteration(self) -> None:
        """Streaming only: copy this iteration's real batches (and labels) into the fixed input buffers."""
        if self.stream is not None:
            for i, buf in enumerate(self.buffers):
                x, y = self.stream.next()
                buf.copy_(x, non_blocking=True)
                if y is not None:
                    self.label_buffers[i].copy_(y, non_blocking=True)
            self.drawn = self.stream.drawn

    def batch(self, i: int) -> torch.Tensor:
        """The ``i``-th real batch of this iteration, (batch, C, H, W) float32, not augmented."""
        return self.labelled_batch(i)[0]

    def labelled_batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The ``i``-th real batch of this iteration and its labels ((batch,) int64 on the device; None without labels)."""
        if self.data is not None:
            return self.data.sample_labelled(self.batch_size)
        j = min(i, len(self.buffers) - 1)  # moderated extra D steps reuse the last batch
        return self.buffers[j], self.label_buffers[j] if self.label_buffers else None

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()

    def state_dict(self) -> dict[str, Any]:
        return {"batches_drawn": self.drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        drawn = state["batches_drawn"]
        if not isinstance(drawn, int) or isinstance(drawn, bool) or drawn < 0:
            raise ValueError(f"batches_drawn: expected an integer >= 0, got {drawn!r}")
        if self.stream is not None:
            raise RuntimeError("restore the feed before start()")
        self.drawn = drawn
