"""params.yaml's ``paths`` section: where every stage reads and writes, as a typed section.

dvc.yaml templates these folders (``${paths.model}``) into its commands, deps and outs;
Python code that needs a stage's folder outside a stage (``python -m satgan.evaluate.summary``) loads
them with ``load_section("paths", PathsParams)`` instead of parsing the file by hand. The
file names inside each folder are :mod:`satgan.names`.
"""

from __future__ import annotations

from dataclasses import dataclass

from satgan.params import check


@dataclass(frozen=True)
class PathsParams:
    """params.yaml ``paths:``, one folder per stage output (relative to the repository root)."""

    raw: str
    validated: str
    prepared: str
    model: str
    checkpoints: str
    live: str
    samples: str
    eval: str

    def __post_init__(self) -> None:
        check("raw", self.raw.strip() != "", "a folder path", self.raw)
        check("validated", self.validated.strip() != "", "a folder path", self.validated)
        check("prepared", self.prepared.strip() != "", "a folder path", self.prepared)
        check("model", self.model.strip() != "", "a folder path", self.model)
        check("checkpoints", self.checkpoints.strip() != "", "a folder path", self.checkpoints)
        check("live", self.live.strip() != "", "a folder path", self.live)
        check("samples", self.samples.strip() != "", "a folder path", self.samples)
        check("eval", self.eval.strip() != "", "a folder path", self.eval)
