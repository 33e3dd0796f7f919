"""How long-running library code reports progress without knowing about the terminal.

Library functions take a ``Reporter``; the CLI passes a Rich one, tests and scripts the
silent default. This keeps rich output (and ``--json``/quiet modes) in the CLI.
"""

from __future__ import annotations


class Reporter:
    """Silent reporter; subclasses render. ``task`` names are free text."""

    def start(self, task: str, total: int | None = None) -> None:
        pass

    def advance(self, task: str, n: int = 1, **fields) -> None:
        pass

    def finish(self, task: str) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def callback(self, task: str):
        """A ``progress(done, total)`` function for code that reports counts."""
        state = {"started": False, "done": 0}

        def progress(done: int, total: int) -> None:
            if not state["started"]:
                self.start(task, total)
                state["started"] = True
            self.advance(task, done - state["done"])
            state["done"] = done
            if done >= total:
                self.finish(task)

        return progress


SILENT = Reporter()
