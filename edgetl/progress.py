"""Rich progress bars shared by every long-running stage (off with EDGETL_PROGRESS=0)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


_console = Console(stderr=True)


def enabled_by_default() -> bool:
    """Progress bars are on in a terminal, unless EDGETL_PROGRESS=0."""
    return os.environ.get("EDGETL_PROGRESS", "1") != "0" and _console.is_terminal


class Ticker:
    """A transient progress bar whose extra text (loss, accuracy) the caller updates."""

    def __init__(self, description: str, total: int | None, enabled: bool = True) -> None:
        self._progress: Progress | None = None
        if enabled and enabled_by_default():
            self._progress = Progress(
                TextColumn("[bold blue]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=_console,
                transient=True,
            )
            self._task = self._progress.add_task(description, total=total, info="")

    def __enter__(self) -> Ticker:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress:
            self._progress.stop()

    def advance(self, info: str = "") -> None:
        """One step done; show ``info`` beside the bar."""
        if self._progress:
            self._progress.update(self._task, advance=1, info=info)


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` under a :class:`Ticker`."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Ticker(description, total, enabled) as ticker:
        for item in items:
            yield item
            ticker.advance()
