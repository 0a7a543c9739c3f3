"""Errors that the command line reports as one clear message, without a traceback."""

from __future__ import annotations

from pathlib import Path


class CovidTfError(Exception):
    """A problem the user can fix: bad input, a missing file, a wrong option."""


class ImageReadError(CovidTfError):
    """An image file that cannot be read; carries the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
