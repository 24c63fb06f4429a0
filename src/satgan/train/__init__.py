"""Stage 4, train: a DCGAN with switchable hacks, resumable checkpoints and dvclive logging.

The package, one concern per module (each imports only the ones above it):

- :mod:`~satgan.train.params`: the typed ``train`` section (:class:`TrainParams`, one dataclass per hack);
- :mod:`~satgan.train.registry`: every hack listed once (name, key, source, description, default);
- :mod:`~satgan.train.runtime`: device, CPU threads, DDP ranks, seeds and RNG state;
- :mod:`~satgan.train.precision`: bf16 autocast + channels_last or fp32 (CUDA ``amp``, CPU ``cpu_bf16``);
- :mod:`~satgan.train.data`: real batches, resident on the device or streamed from the memmap;
- :mod:`~satgan.train.hacks`: the hacks' device-side functions and their stateful objects;
- :mod:`~satgan.train.checkpoint`: save and restore every registered part of the trainer;
- :mod:`~satgan.train.step`: :class:`Trainer`, one iteration = (1) update D, (2) update G;
- :mod:`~satgan.train.fastpath`: the CUDA graph / torch.compile step, checked against eager steps (fallback: eager),
  wrapped around a Trainer's iterations by the loop;
- :mod:`~satgan.train.loop`: :func:`train`, the stage (resume, iterate, log, checkpoint, write the model).

Public API: ``from satgan.train import train, TrainParams`` (the stage), plus ``Trainer``,
``model_config``, ``Dist`` and ``pick_device`` for benchmarks; the hack list is
``from satgan.train.registry import HACKS`` (not imported here, so that ``python -m
satgan.train.registry`` runs it as a fresh module).
"""

from satgan.train.loop import train
from satgan.train.params import TrainParams
from satgan.train.runtime import Dist, pick_device
from satgan.train.step import Trainer, model_config

__all__ = ["Dist", "TrainParams", "Trainer", "model_config", "pick_device", "train"]
