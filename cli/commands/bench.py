"""``mxa-edge bench``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mxa_edge.support.outputs import FORCE_HELP
from mxa_edge_cli.options import QuietOpt, TrustOpt
from mxa_edge_cli.output import Output, json_safe


def _batches(text: str) -> list[int]:
    from mxa_edge.support.errors import ConfigError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--batch takes comma-separated positive integers such as 1,8; got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--batch takes comma-separated positive integers such as 1,8; got {text!r}")
    return values


def bench(
    paths: List[Path] = typer.Argument(
        ..., help="Run folders (PyTorch + every export under RUN/exports) and/or artifact folders."
    ),
    batch: str = typer.Option(
        "1,8", "--batch", "-b", help="Batch sizes: latency at the smallest, throughput at the largest."
    ),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="Threads for every backend. Default: the physical cores."
    ),
    seconds: float = typer.Option(
        3.0, "--seconds", min=0.01, help="Measured time per row and batch size, split over interleaved rounds."
    ),
    warmup: float = typer.Option(
        1.0, "--warmup", min=0.0, help="Warm-up time per row and batch size before measuring."
    ),
    rounds: int = typer.Option(5, "--rounds", min=1, help="Interleaved rounds; figures are medians over rounds."),
    json_file: Optional[Path] = typer.Option(
        None,
        "--json",
        help="Write everything (rows, machine, settings, compute bound) to this JSON file. Default for a "
        "single run folder: RUN/bench.json.",
    ),
    plot: Optional[Path] = typer.Option(
        None,
        "--plot",
        help="Write a PNG of batch-1 latency (log x) against macro AUC. Default for a single run folder: "
        "RUN/bench.png.",
    ),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    export_missing: Optional[bool] = typer.Option(
        None,
        "--export-missing/--no-export-missing",
        help="Create a run's missing ONNX/OpenVINO FP32/INT8 exports (drift-gated with the export defaults). "
        "Default: on when torch is installed.",
    ),
    trust: Optional[List[Path]] = TrustOpt,
    allow_rejected: bool = typer.Option(
        False,
        "--allow-rejected",
        help="Also time artifacts whose drift gate failed (for investigation; each such row says so). "
        "Without it they are listed as rejected and not timed.",
    ),
    quiet: bool = QuietOpt,
):
    """Benchmark a run and its exports across backends: FLOPs, size, latency, throughput, AUC.

    Rows: PyTorch eager FP32, ONNX Runtime FP32/INT8, OpenVINO FP32 (f32 hint), OpenVINO at the
    CPU's default precision (bf16 where the CPU has it), OpenVINO INT8, TensorRT FP16/INT8 and
    PyTorch CUDA bf16 (or why they cannot run here). Every row runs on the same pinned threads,
    interleaved in rounds so load from other jobs hits all rows alike; figures are medians
    over rounds and speedups are paired round by round against the run's PyTorch FP32 row.
    """
    from mxa_edge.bench import plot_latency_auc, run_bench
    from mxa_edge.formats import naming
    from mxa_edge.support.errors import ConfigError
    from mxa_edge.support.outputs import OutputChecker

    if json_file is None and plot is None and len(paths) == 1 and naming.is_run(paths[0]):
        json_file, plot = paths[0] / naming.BENCH_JSON, paths[0] / naming.BENCH_PLOT  # a run's results beside it
    checker = OutputChecker(paths, force=force)  # before any work: outputs never overwrite inputs
    for path, kind in ((json_file, "bench-json"), (plot, "bench-plot")):
        if path is not None:
            checker.check(path, kind)
    if json_file is not None and plot is not None and Path(json_file).absolute() == Path(plot).absolute():
        raise ConfigError(f"{json_file}: named by both --json and --plot; give them different files")
    o = Output(False, quiet)
    rep = o.reporter()
    with o.libraries():
        result = run_bench(
            paths,
            batches=_batches(batch),
            threads=threads,
            seconds=seconds,
            warmup=warmup,
            rounds=rounds,
            export_missing=export_missing,
            reporter=rep,
            allow_rejected=allow_rejected,
            trust=trust,
        )
    if json_file is not None:
        from mxa_edge.support.fileio import write_json

        write_json(json_file, json_safe(result))
        o.info(f"wrote {json_file}")
    if plot is not None:
        written = plot_latency_auc(result, plot)
        if written is None:
            o.warn("no plot written: matplotlib is not installed or no row has both a latency and an AUC")
        else:
            o.info(f"wrote {written}")
    o.result(result, lambda c: render(c, result))


def _f(x, fmt: str = "{:.2f}") -> str:
    return "—" if x is None else fmt.format(x)


_SHORT = {"PyTorch eager": "PyTorch", "ONNX Runtime": "ORT", "PyTorch CUDA": "Torch CUDA"}


def _status(row: dict, notes: list[str]) -> str:
    s = row["status"]
    if s == "pass":
        return "[green]pass[/]"
    notes.append(f"{row['backend']} {row['precision']}: {s} — {row.get('reason')}")
    mark = f"[{len(notes)}]"
    if s == "unavailable":
        return f"[dim]n/a {mark}[/]"
    if s == "failed":
        return f"[red]failed {mark}[/]"
    return f"[yellow]rejected {mark}[/]"  # exported but failed validation (drift gate)


def render(console, result: dict) -> None:
    from rich.table import Table

    st = result["settings"]
    lb, tb = st["latency_batch"], st["throughput_batch"]
    groups: dict[str, list[dict]] = {}
    for r in result["rows"]:
        groups.setdefault(r["group"], []).append(r)
    for rows in groups.values():
        # Params and GFLOPs are the model's (counted once on the FP32 model): in the title.
        head = next((r for r in rows if r.get("gflops")), rows[0])
        t = Table(
            title=f"{head['model']} — {_f(head.get('params') and head['params'] / 1e6)} M params, "
            f"{_f(head.get('gflops'), '{:.3f}')} GFLOPs at {head.get('image_size') or '?'} px",
            title_justify="left",
        )
        t.caption = (
            f"latency at batch {lb} (ms), throughput at batch {tb}; speedup = PyTorch FP32 p50 / row p50 "
            "(paired per round); % peak = achieved GFLOP/s / measured peak at the row's precision"
        )
        cols = ("Backend", "Precision", "Status", "MB", "p50/p90/p99", "img/s", "speedup", "%peak", "AUC", "worst Δ")
        for c in cols:
            t.add_column(
                c,
                justify="left" if c in ("Backend", "Precision", "Status", "worst Δ") else "right",
                min_width=17 if c == "p50/p90/p99" else None,
            )
        notes: list[str] = []
        for r in rows:
            worst = f"{r['worst_delta']:+.3f} {r['worst_label'][:12]}" if r.get("worst_delta") is not None else "—"
            lat = f"{r['p50_ms']:.2f}/{r['p90_ms']:.2f}/{r['p99_ms']:.2f}" if r["p50_ms"] is not None else "—"
            t.add_row(
                _SHORT.get(r["backend"], r["backend"]),
                r["precision"].replace(" (f32 hint)", "").replace(" (CPU default)", " default"),
                _status(r, notes),
                _f(r.get("size_mb"), "{:.1f}"),
                lat,
                _f(r["throughput_img_s"], "{:.0f}"),
                _f(r["speedup"], "{:.2f}x"),
                _f(r["fraction_of_peak"] * 100 if r["fraction_of_peak"] else None, "{:.1f}%"),
                _f(r.get("macro_auc"), "{:.3f}"),
                worst,
            )
        console.print(t)
        for i, n in enumerate(notes, 1):
            console.print(f"  [{i}] {n}", highlight=False, markup=False)
    m, cb = result["machine"], result["compute_bound"]
    flags = " ".join(k for k, v in m["flags"].items() if v)
    from mxa_edge.support.machine import isa_line

    console.print(
        f"{m['cpu_model']} ({isa_line()}), {m['physical_cores']} physical / {m['logical_cores']} logical cores, "
        f"{flags}; "
        f"{st['threads']} threads, {st['seconds']} s per row and batch in {st['rounds']} interleaved rounds (medians); "
        f"load average {', '.join(f'{x:.1f}' for x in m['load_average'] or [])}"
    )
    meas = cb["measured"]
    peaks = ", ".join(f"{k} {meas[k]['gflops']:.0f}" for k in ("fp32", "bf16", "int8") if k in meas)
    console.print(f"peak GFLOP/s measured ({meas['fp32']['method']}; int8: {meas['int8']['method']}): {peaks}")
    th = cb["theoretical"]
    if th.get("available"):
        console.print(
            f"theoretical: fp32 {th['fp32']:.0f}, bf16 {th['bf16']:.0f}, int8 {th['int8']:.0f} GFLOP/s — "
            f"{th['assumption']}"
        )
    if cb.get("above_measured_peak"):
        over = cb["above_measured_peak"]
        console.print(f"above 100% of the measured peak: {', '.join(over['rows'])} — {over['why']}")
    for group, fast in (result.get("fastest") or {}).items():
        lat, thr = fast.get("latency"), fast.get("throughput")
        if lat:
            line = f"fastest gated export at batch {lb}: [bold]{lat['row']}[/] ({lat['p50_ms']:.2f} ms p50)"
            if thr:
                line += f"; most img/s at batch {tb}: [bold]{thr['row']}[/] ({thr['throughput_img_s']:.0f} img/s)"
            console.print(line + (f" — {Path(group).name}" if len(result["fastest"]) > 1 else ""))
        verdict = fast.get("int8_vs_float")
        if verdict and verdict.get("note"):
            console.print(f"[yellow]{verdict['note']}[/]")
        elif verdict:
            console.print(
                f"INT8 earns its place here: {verdict['int8']} is {verdict['speedup']:.2f}x {verdict['float']}"
            )
    for group, goals in (result.get("goals") or {}).items():
        render_goals(console, goals, Path(group).name if len(result["goals"]) > 1 else None)
    best = cb.get("best_int8")
    if best:
        console.print(
            f"best INT8: {best['row']} at {best['achieved_gflops']:.1f} GFLOP/s = "
            f"{best['ratio_to_measured_peak']:.1%} of the "
            f"measured int8 peak ({best['bound_img_s']:.0f} img/s bound), "
            f"{_f(best['ratio_to_theoretical_peak'] and best['ratio_to_theoretical_peak'] * 100, '{:.1f}%')} "
            "of theoretical"
        )


_GOAL_LABELS = {
    "int8_vs_pytorch": "best gated INT8 vs PyTorch eager FP32, batch-1 latency",
    "int8_throughput_vs_bound": "its large-batch throughput, share of the INT8 compute bound",
    "int8_vs_float": "best gated INT8 vs best gated float artifact, batch-1 latency",
    "mxa_overhead": "MXA's added batch-1 latency, every backend",
}


def _goal_value(key: str, value) -> str:
    if value is None:
        return "—"
    return f"{value:.1%}" if key in ("int8_throughput_vs_bound", "mxa_overhead") else f"{value:.2f}x"


def render_goals(console, goals: dict, title: str | None = None) -> None:
    """The issue-17 goal ratios, one line each: value, target, met, and the rows compared."""
    head = f"goals ({goals['isa']}{'; ' + title if title else ''}): INT8 = {goals['int8'] or '—'}, "
    console.print(head + f"float = {goals['float'] or '—'}", highlight=False)
    for key, label in _GOAL_LABELS.items():
        g = goals[key]
        if g["target"] is None:
            target, mark = "no target here", "[dim]n/a[/]"
        else:
            sign = "<=" if key == "mxa_overhead" else ">="
            target = f"{sign} {_goal_value(key, g['target'])}"
            mark = "[dim]not measured[/]" if g["met"] is None else "[green]met[/]" if g["met"] else "[red]missed[/]"
        line = f"  {label}: {_goal_value(key, g['value'])} (target {target}) {mark}"
        if g.get("note"):
            line += f" — {g['note']}"
        console.print(line, highlight=False)
