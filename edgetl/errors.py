"""Typed errors that carry a fix hint.

The CLI turns every :class:`EdgetlError` into one line on stderr and exit code 2;
library code raises them at the boundary instead of asserting or exiting.
"""

from __future__ import annotations


class EdgetlError(Exception):
    """Base of every error a user can fix.

    Args:
        message: What is wrong, in one sentence.
        hint: How to fix it, in one sentence (optional).
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint as one line for the terminal."""
        return f"{self.message} -- {self.hint}" if self.hint else self.message


class ConfigError(EdgetlError):
    """A config value, flag or recipe is invalid."""


class UnknownNameError(ConfigError):
    """A name (backbone, format, target, engine...) is not registered."""


class DataError(EdgetlError):
    """The dataset is missing, malformed or unusable."""


class WeightsError(EdgetlError):
    """Weights could not be resolved or loaded."""


class OutputExistsError(EdgetlError):
    """The output folder exists and is not empty."""


class RunFolderError(EdgetlError):
    """A run or bundle folder is missing files or is malformed."""


class ExportError(EdgetlError):
    """An export failed."""


class ParityError(ExportError):
    """The exported artifact does not give the same answers as the reference."""


class BenchmarkError(EdgetlError):
    """A benchmark could not run."""
