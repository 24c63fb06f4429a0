"""Real batches for the trainer: the whole dataset resident on the device, or streamed from the memmap.

:class:`RealFeed` picks one by ``train.data_budget_mb`` and hides the difference from the step:
``begin_iteration()`` on the host before each iteration, ``batch(i)`` inside it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any

import numpy as np
import torch


class ResidentData:
    """The whole dataset as one device tensor; batches are drawn inside the step (graph-safe)."""

    def __init__(self, array: np.ndarray, device: torch.device, channels_last: bool) -> None:
        t = torch.from_numpy(np.array(array))  # a writable in-memory copy of the memmap
        # fp16 halves GPU memory and is cast in the step; CPUs are slow at fp16, so keep fp32 there
        t = t.to(device=device, dtype=torch.float16 if device.type == "cuda" else torch.float32)
        self.data = t.contiguous(memory_format=torch.channels_last) if channels_last else t

    def sample(self, batch: int) -> torch.Tensor:
        idx = torch.randint(0, self.data.shape[0], (batch,), device=self.data.device)
        return self.data.index_select(0, idx).float()


class StreamingData:
    """Batches gathered from the memmap by a background thread into pinned memory.

    Batch ``k`` uses indices from ``numpy.random.default_rng([seed, rank, k])``, so the
    sequence is deterministic and resumable from the checkpointed batch counter ``k``.
    """

    def __init__(self, array: np.ndarray, device: torch.device, batch: int, seed: int, rank: int, start: int) -> None:
        self.array, self.device, self.batch, self.seed, self.rank = array, device, batch, seed, rank
        self.drawn = start
        self._queue: queue.Queue[torch.Tensor] = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(start,), daemon=True)
        self._thread.start()

    def _fill(self, k: int) -> None:
        pin = self.device.type == "cuda"
        while not self._stop.is_set():
            idx = np.sort(np.random.default_rng([self.seed, self.rank, k]).integers(0, len(self.array), self.batch))
            t = torch.from_numpy(np.asarray(self.array[idx], dtype=np.float32))
            self._queue.put(t.pin_memory() if pin else t)
            k += 1

    def next(self) -> torch.Tensor:
        self.drawn += 1
        return self._queue.get().to(self.device, non_blocking=True)

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
    the same addresses) and ``batch(i)`` returns buffer ``i``.
    """

    def __init__(self, array: np.ndarray, device: torch.device, batch: int, per_iteration: int, budget_mb: int,
                 channels_last: bool, seed: int, rank: int) -> None:
        self.array, self.device, self.batch_size, self.per_iteration = array, device, batch, per_iteration
        self.seed, self.rank = seed, rank
        item = 2 if device.type == "cuda" else 4
        self.resident = array.size * item <= budget_mb * 2**20
        self.data = ResidentData(array, device, channels_last) if self.resident else None
        self.stream: StreamingData | None = None
        self.buffers: list[torch.Tensor] = []
        self.drawn = 0  # streamed batches consumed so far: where a resumed stream continues

    def start(self) -> None:
        """Streaming only: start the prefetch thread at the current counter (call after restoring a checkpoint)."""
        if not self.resident and self.stream is None:
            self.stream = StreamingData(self.array, self.device, self.batch_size, self.seed, self.rank, self.drawn)
            shape = (self.batch_size, *self.array.shape[1:])
            self.buffers = [torch.empty(shape, device=self.device) for _ in range(self.per_iteration)]

    def begin_iteration(self) -> None:
        """Streaming only: copy this iteration's real batches into the fixed input buffers."""
        if self.stream is not None:
            for buf in self.buffers:
                buf.copy_(self.stream.next(), non_blocking=True)
            self.drawn = self.stream.drawn

    def batch(self, i: int) -> torch.Tensor:
        """The ``i``-th real batch of this iteration, (batch, C, H, W) float32, not augmented."""
        if self.data is not None:
            return self.data.sample(self.batch_size)
        return self.buffers[min(i, len(self.buffers) - 1)]  # moderated extra D steps reuse the last batch

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
