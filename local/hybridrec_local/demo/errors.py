"""How the demo stops: a :class:`DemoError` that says where and what to do, or an interrupt."""

from __future__ import annotations


class DemoError(RuntimeError):
    """The demo cannot go on. ``step`` names where it stopped, ``hint`` what the person can do about it."""

    def __init__(self, step: str, problem: str, hint: str = "") -> None:
        super().__init__(f"{step}: {problem}" + (f"\n  what to do: {hint}" if hint else ""))
        self.step = step
        self.problem = problem
        self.hint = hint


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C so every ``finally`` cleans up."""
