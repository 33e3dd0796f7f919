"""``mxa-edge monitor``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mxa_edge_cli.options import JsonOpt, QuietOpt


def monitor(
    logs: List[Path] = typer.Argument(..., help="Audit log(s) of `mxa-edge serve` (JSON lines, one event per line)."),
    model: Optional[Path] = typer.Option(
        None,
        "--model",
        help="The artifact the node runs: its guard's expected flag rate and each finding's positive rate at its "
        "threshold on the tuning split are the expected rates (read only; a rejected or unsigned one is accepted).",
    ),
    baseline_days: Optional[int] = typer.Option(
        None,
        "--baseline-days",
        min=1,
        help="The log's first N days are the baseline: expected rates the artifact does not give come from them, "
        "and they are not tested.",
    ),
    alpha: float = typer.Option(
        0.01, "--alpha", help="False-alarm rate per day, all tests of the day together (Bonferroni)."
    ),
    plot: Optional[Path] = typer.Option(
        None, "--plot", help="Write a PNG: daily flag rate and positive rates with their expected band."
    ),
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Site-level drift alarms from the DICOM node's audit log.

    Per UTC day: studies, images, the input guard's flag rate, each finding's positive rate,
    p50/p95 latency of sent results and send failures. Each day is tested against the expected
    rates (from --model, else the --baseline-days) at alpha / m, m = the day's tests (Bonferroni):
    the flag rate above expected with a one-sided exact binomial test (Fisher's exact test when the
    expected rate is itself a count: baseline days, tuning split), each finding's positive rate with
    the same test two-sided, and the flag rate's slow drift with a one-sided Bernoulli CUSUM tuned to
    a doubling (k between p0 and 2 p0; h simulated so its false-alarm rate per day is at most alpha / m).
    Exit 11 when any alarm fires, one line per alarm (day, metric, observed vs expected, p-value).
    """
    from mxa_edge.runtime.monitor import ALARM_EXIT
    from mxa_edge.runtime.monitor import monitor as run_monitor
    from mxa_edge_cli.output import Output

    o = Output(json_out, quiet)
    if plot is not None:
        _check_plot(plot)
    guard = decision = None
    if model is not None:
        from mxa_edge.formats import load_artifact

        art = load_artifact(model, allow_rejected=True, trust=())
        guard, decision = art.manifest.guard, art.manifest.decision
    report = run_monitor(logs, guard=guard, decision=decision, baseline_days=baseline_days, alpha=alpha)
    if plot is not None:
        from mxa_edge.runtime.monitor import plot as draw

        draw(report, plot, software=PLOT_SOFTWARE)
        o.info(f"plot: {plot}")

    def render(console):
        console.print(
            f"{'day':<10} {'studies':>7} {'images':>6} {'flagged':>9} {'p50 s':>6} {'p95 s':>6} {'send fail':>9}"
        )
        for d in report.days:
            flag = f"{d.flag_rate:.1%}" if d.flag_rate is not None else "—"
            p50 = f"{d.latency_p50:.2f}" if d.latency_p50 is not None else "—"
            p95 = f"{d.latency_p95:.2f}" if d.latency_p95 is not None else "—"
            console.print(f"{d.date:<10} {d.studies:>7} {d.images:>6} {flag:>9} {p50:>6} {p95:>6} {d.send_failures:>9}")
        if report.expected_flag is not None:
            console.print(f"expected flag rate {report.expected_flag.rate:.1%}: {report.expected_flag.source}")
        if report.cusum:
            c = report.cusum
            console.print(f"CUSUM: k = {c['k']:.2%} per image, h = {c['h']:.2f} flagged images")
        for note in report.notes:
            console.print(f"note: {note}", markup=False)
        console.print(f"{len(report.alarms)} alarm(s) at alpha = {report.alpha:g} per day", markup=False)

    o.result(report.to_dict(), render)
    for a in report.alarms:
        o.err.print(a.line(), style="bold red", markup=False, soft_wrap=True)
    if report.alarmed:
        raise typer.Exit(code=ALARM_EXIT)


PLOT_SOFTWARE = "mxa-edge monitor"  # the PNG's Software text chunk: a rerun may replace its own plot


def _check_plot(path: Path) -> None:
    """Before any work: --plot never goes inside an artifact or run, never over a file that is not
    a previous monitor plot (which also keeps it off the logs). ``mxa_edge.support.outputs`` has no kind
    for this plot yet; these are its rules 2 and 4 for this one file."""
    from mxa_edge.formats import naming
    from mxa_edge.support.errors import ConfigError
    from mxa_edge.support.outputs import png_software

    for folder in (path.absolute(), *path.absolute().parents, *path.resolve().parents):
        if naming.is_artifact(folder) or naming.is_run(folder):
            raise ConfigError(f"{path}: inside the mxa-edge artifact or run {folder}; choose another --plot")
    if path.exists() and png_software(path) != PLOT_SOFTWARE:
        raise ConfigError(f"{path}: exists and is not a monitor plot written by mxa-edge; choose another --plot")
