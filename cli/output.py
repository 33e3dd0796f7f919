"""One output sink for every command: human (rich), --json (stdout, machine-readable) or quiet.

Results go to stdout; progress bars and log lines go to stderr, so
``mxa-edge eval RUN --json > metrics.json`` stays clean while a person still sees progress.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import warnings
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mxa_edge.support.progress import Reporter


class Output:
    def __init__(self, json_mode: bool = False, quiet: bool = False):
        self.json_mode = json_mode
        self.quiet = quiet
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)

    def result(self, obj, render: Callable[[Console], None] | None = None) -> None:
        if self.json_mode:
            sys.stdout.write(json.dumps(json_safe(obj), indent=2) + "\n")
        elif render is not None and not self.quiet:
            render(self.out)

    def info(self, message: str) -> None:
        if not (self.quiet or self.json_mode):
            self.err.print(message)

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/] {message}")

    def reporter(self) -> Reporter:
        return Reporter() if (self.quiet or self.json_mode) else RichReporter(self.err)

    @contextlib.contextmanager
    def libraries(self):
        """Around library calls that pull in NNCF, ONNX Runtime or torch: with --quiet, their
        progress bars, warnings and log lines (none of them errors) are dropped. Our own errors
        are raised out of this block and printed after it."""
        if not self.quiet:
            yield
            return
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            try:
                yield
            finally:
                logging.disable(logging.NOTSET)


def artifact_status(artifact) -> dict:
    """What every output of a command that used ``artifact`` records about it: the drift gate's
    verdict (and whether a rejected one was allowed) and who signed it."""
    return {
        "artifact_gate": artifact.gate_line(),
        "allow_rejected": bool(artifact.allowed_rejected),
        "signature": artifact.provenance.status,
        "signature_key": artifact.provenance.key,
    }


def announce_artifact(o: Output, artifact) -> None:
    """The artifact's provenance on stderr, and a loud line for a rejected one (even with --json
    and --quiet: a person running it must see it)."""
    if artifact.allowed_rejected:
        o.err.print(f"WARNING: {artifact.path}: {artifact.gate_line()}", style="bold red", soft_wrap=True, markup=False)
    o.info(f"{artifact.path}: {artifact.provenance.describe()}")


def json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return json_safe(obj.item())
    return obj


class RichReporter(Reporter):
    """Progress bars (one per task) with the latest numeric fields (loss, lr, img/s)."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[extra]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.tasks: dict[str, int] = {}

    def start(self, task: str, total: int | None = None) -> None:
        if not self.tasks:
            self.progress.start()
        self.tasks[task] = self.progress.add_task(task, total=total, extra="")

    def advance(self, task: str, n: int = 1, **fields) -> None:
        if task not in self.tasks:
            self.start(task)
        extra = "  ".join(_fmt(k, v) for k, v in fields.items())
        self.progress.update(self.tasks[task], advance=n, extra=extra)

    def finish(self, task: str) -> None:
        tid = self.tasks.pop(task, None)
        if tid is not None:
            self.progress.remove_task(tid)
        if not self.tasks:
            self.progress.stop()

    def log(self, message: str) -> None:
        self.console.print(f"[dim]·[/] {message}")


def _fmt(key: str, value) -> str:
    if key == "lr":
        return f"lr {value:.2e}"
    if key == "img_s":
        return f"{value:.0f} img/s"
    if isinstance(value, float):
        return f"{key} {value:.4f}"
    return f"{key} {value}"
