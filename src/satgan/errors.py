"""User-facing errors.

Anything a user can cause (a bad params value, a missing input file, too many failed
downloads) raises a subclass of :class:`SatganError`. Stage entry points catch exactly
this class and exit with a one-line message and status 2; everything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


def one_line(text: object) -> str:
    """``text`` as one line: every run of whitespace (newlines included) becomes a single space.

    Error messages end up on one stderr line and in CSV cells (a manifest's ``error``, a
    rejection's ``detail``); library messages such as urllib's redirect-loop error or a YAML
    parser's span several lines.
    """
    return " ".join(str(text).split())


class SatganError(Exception):
    """An error caused by the user's inputs or configuration, with a message that names the culprit.

    The message is always one line (see :func:`one_line`), whatever the text it was built from.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(message))


class ParamsError(SatganError):
    """params.yaml is missing a key, has an unknown key, or a value of the wrong type or range."""


class DataError(SatganError):
    """An input file or folder is missing or unusable as a whole (single bad images are rejections, not errors)."""


class DownloadError(SatganError):
    """The download stage cannot produce a usable raw dataset (e.g. too many tiles failed)."""


class TrainingError(SatganError):
    """Training diverged (NaN/inf) or cannot resume/start with the given inputs."""


class ModelFileError(SatganError):
    """A model file is missing, malformed, or not in a safe format (pickles are refused)."""
