"""The demo's output, step by step: a progress line while a step runs, one line when it is done, and every failure
turned into a :class:`~hybridrec_local.demo.errors.DemoError` that names the step and what to do about it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from hybridrec_local.demo.errors import DemoError, Terminated


class StepHandle:
    """Lets a step update its progress line; the last note is printed when the step is done."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task
        self.info = ""

    def note(self, text: str) -> None:
        self.info = text
        self._progress.update(self._task, info=text)

    def total(self, total: float) -> None:
        self._progress.update(self._task, total=total)

    def advance(self, n: float = 1.0) -> None:
        self._progress.advance(self._task, n)

    def completed(self, n: float) -> None:
        self._progress.update(self._task, completed=n)


class Steps:
    """Prints the steps of the demo on ``console`` (a rich Console); the progress lines only on a terminal."""

    def __init__(self, console: Any) -> None:
        self.console = console

    @contextlib.contextmanager
    def step(self, title: str, hint: str = "", total: float | None = None) -> Iterator[StepHandle]:
        """A progress line while a long step runs, then one line saying it is done (so the output reads in order);
        any error becomes a DemoError naming the step and what to do."""
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        started = time.monotonic()
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20),
                      TextColumn("[dim]{task.fields[info]}[/dim]"), TimeElapsedColumn(), console=self.console,
                      transient=True, disable=not self.console.is_terminal) as progress:
            task = progress.add_task(title, total=total, info="")
            handle = StepHandle(progress, task)
            try:
                yield handle
            except (DemoError, KeyboardInterrupt, Terminated):
                progress.stop()
                self.console.print(f"[red]✗ {title}[/red]")
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is reported with the step's name and a hint
                progress.stop()
                self.console.print(f"[red]✗ {title}[/red]")
                raise DemoError(title, f"{type(exc).__name__}: {exc}", hint) from exc
        from rich.markup import escape

        info = handle.info
        self.console.print(f"[green]✓[/green] {title} [dim]({time.monotonic() - started:.1f} s)"
                           f"{' ' + escape(info) if info else ''}[/dim]")

    def wait(self, step: str, what: str, check: Callable[[], bool], timeout: float, hint: str,
             alive: Callable[[], None] | None = None) -> None:
        """Poll ``check`` until true; a timeout is a DemoError that names the step and says what to look at."""
        deadline = time.monotonic() + timeout
        while not check():
            if alive is not None:
                alive()
            if time.monotonic() > deadline:
                raise DemoError(step, f"timed out after {timeout:.0f} s waiting for {what}", hint)
            time.sleep(0.5)
