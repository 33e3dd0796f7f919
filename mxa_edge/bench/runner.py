"""run_bench: every backend of every model variant given, measured side by side.

The story, in order:

1. resolve the paths: a run folder gives its PyTorch FP32 model, every artifact under
   RUN/exports/ (creating the missing standard ones with ``export_missing``), and TensorRT /
   CUDA rows that say why they cannot run here; an artifact folder gives just itself;
2. machine record and the compute bound (measured GEMM peaks + theoretical peaks);
3. open every subject once on the pinned threads (a failure becomes a ``failed`` row);
4. for each batch size: warm-up, then interleaved fixed-duration rounds (``timing.py``);
5. rows: latency at the smallest batch, throughput at the largest, speedups over the same
   run's PyTorch FP32 row paired round by round, achieved GFLOP/s and fraction of peak.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mxa_edge import torch_side
from mxa_edge.backends import all_specs
from mxa_edge.bench import subjects as S
from mxa_edge.bench.goals import goal_ratios
from mxa_edge.bench.peak import compute_bound
from mxa_edge.bench.timing import measure_interleaved, paired_ratio
from mxa_edge.formats import Precision, RunRecord, load_artifact, naming
from mxa_edge.support.errors import ArtifactError, ConfigError, DriftGateError, MissingDependencyError, MxaError
from mxa_edge.support.machine import isa_line, machine_record, physical_cores
from mxa_edge.support.progress import SILENT, Reporter


def _export_missing(run_dir: Path, export_kwargs: dict, reporter: Reporter) -> list[S.Subject]:
    """Create the standard exports (each CPU backend's ``standard_exports``) that are neither
    published nor rejected yet; a failing export (other than its drift gate) becomes a ``failed`` row."""

    failed = []
    for spec in all_specs():
        if not spec.cpu:
            continue
        for precision in spec.standard_exports:
            out = naming.default_artifact_dir(run_dir, spec.name, precision)
            if naming.is_artifact(out) or naming.is_artifact(naming.rejected_dir(out)):
                continue
            reporter.log(f"exporting {run_dir.name} -> {out.name}")
            try:
                torch_side.export_run(
                    run_dir,
                    spec.name,
                    out,
                    int8=precision.int8,
                    qat=precision.qat,
                    fp16=precision is Precision.FP16,
                    progress=None,
                    **export_kwargs,
                )
            except DriftGateError:
                pass  # kept as NAME.rejected; reported as "exported but failed validation"
            except Exception as exc:
                failed.append(
                    S.Subject(
                        key=f"{run_dir}::export-{out.name}",
                        group=str(run_dir),
                        backend=spec.display,
                        precision=precision.label,
                        compute=precision.compute,
                        model=out.name,
                        image_size=None,
                        status=S.FAILED,
                        reason=f"export failed: {type(exc).__name__}: {exc}",
                        order=spec.order + list(Precision).index(precision),
                    )
                )
    return failed


def _run_subjects(
    run_dir: Path, export_missing: bool, export_kwargs: dict, reporter: Reporter, access: dict
) -> list[S.Subject]:
    group = str(run_dir)
    run = RunRecord.load(run_dir)
    metrics = run.metrics()
    out: list[S.Subject] = []
    cost: dict = {}
    if torch_side.installed():
        cost = torch_side.count_flops(torch_side.load_run_model(run), run.model.image_size)  # as export counts it
        out.append(S.pytorch_subject(run, metrics, cost, group))
        if export_missing:
            out += _export_missing(run_dir, export_kwargs, reporter)
    else:
        row = S.pytorch_subject(run, metrics, cost, group)
        row.status, row.reason, row.open = S.UNAVAILABLE, "torch is not installed (pip install 'mxa-edge[train]')", None
        out.append(row)
    for folder, rejected in naming.run_artifacts(run_dir):
        rows = S.artifact_subjects(folder, group, rejected, **access)
        if not cost and rows and rows[0].flops is not None:
            cost = {"flops": rows[0].flops, "params": rows[0].params}
        out += rows
    # GPU-only targets get a row per precision even without an artifact, saying why.
    for spec in all_specs():
        if spec.cpu:
            continue
        have = {s.precision for s in out if s.backend == spec.display}
        for precision in spec.precisions:
            if precision.label not in have:
                why = f"no {naming.artifact_dir_name(spec.name, precision)} export under {run_dir / naming.EXPORTS}"
                out.append(S.placeholder(spec, precision, group, run.model_name, why, cost))
    out.append(S.cuda_subject(run, cost, group))
    return out


def _artifact_group(path: Path) -> str:
    """Rows of artifacts from one run share that run's PyTorch reference row."""
    try:
        src = load_artifact(path, allow_rejected=True, trust=()).manifest.source_run.path  # grouping only
    except MxaError:
        src = None
    return str(Path(src)) if src else str(path)


def collect_subjects(
    paths: Sequence,
    export_missing: bool | None = None,
    export_kwargs: dict | None = None,
    reporter: Reporter = SILENT,
    *,
    allow_rejected: bool = False,
    trust=None,
) -> list[S.Subject]:
    """Subjects for the given run and artifact folders (see the module docstring)."""
    access = {"allow_rejected": allow_rejected, "trust": trust}
    if export_missing is None:
        export_missing = torch_side.installed()
    if export_missing and not torch_side.installed():
        raise ConfigError("--export-missing needs torch (pip install 'mxa-edge[train]'); pass --no-export-missing")
    subjects: list[S.Subject] = []
    seen: set[str] = set()
    for p in paths:
        p = Path(p).absolute()
        if naming.is_run(p):
            new = _run_subjects(p, export_missing, dict(export_kwargs or {}), reporter, access)
        elif naming.is_artifact(p):
            new = S.artifact_subjects(p, _artifact_group(p), rejected=p.name.endswith(naming.REJECTED_SUFFIX), **access)
        elif not p.exists():
            raise ArtifactError(
                f"{p}: no such folder; pass a run folder from `mxa-edge train` or an artifact from `mxa-edge export`"
            )
        else:
            raise ArtifactError(
                f"{p}: neither a training run ({naming.WEIGHTS} + {naming.MANIFEST}) nor an exported artifact"
            )
        for s in new:
            if s.key not in seen:
                seen.add(s.key)
                subjects.append(s)
    return subjects


def _apply_info(s: S.Subject, info: dict) -> None:
    ip = info.get("inference_precision")
    if ip:
        # Read back from the compiled model (OpenVINO: its INFERENCE_PRECISION_HINT), not the hint asked for.
        s.notes.append(f"executed precision (INFERENCE_PRECISION_HINT after compile): {ip}")
        if s.precision.startswith("CPU default"):
            s.precision = s.precision.replace("CPU default", f"{ip} (CPU default)", 1)
            s.compute = "bf16" if "bf16" in ip else "fp16" if "16" in ip else "fp32"
    s.notes += info.get("notes", [])


def _sort_key(s: S.Subject):
    return (s.group, s.order, s.precision, s.key)


def run_bench(
    paths: Sequence,
    batches: Sequence[int] = (1, 8),
    threads: int | None = None,
    seconds: float = 3.0,
    warmup: float = 1.0,
    rounds: int = 5,
    export_missing: bool | None = None,
    export_kwargs: dict | None = None,
    peak_quick: bool = False,
    seed: int = 0,
    reporter: Reporter = SILENT,
    allow_rejected: bool = False,
    trust=None,
) -> dict:
    """Benchmark runs and artifacts; returns {settings, machine, compute_bound, rows}.

    ``seconds`` is each row's measured time per batch size, split over ``rounds`` interleaved
    rounds; figures are medians over rounds. ``threads`` defaults to the physical cores.
    ``export_missing`` (default: when torch is installed) creates the standard ONNX/OpenVINO
    FP32/INT8 exports of a run that lacks them, through ``export_run(**export_kwargs)``.
    An artifact whose drift gate failed is listed but timed only with ``allow_rejected``;
    ``trust``: public keys every artifact must be signed by (``load_artifact``).
    """
    batches = sorted({int(b) for b in batches})
    if not batches or batches[0] < 1:
        raise ConfigError(f"batch sizes must be positive integers, got {batches}")
    if seconds <= 0 or warmup < 0 or rounds < 1:
        raise ConfigError("--seconds must be > 0, --warmup >= 0 and rounds >= 1")
    threads = int(threads or physical_cores())
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")

    torch_threads = torch_side.get_threads()
    try:
        subjects = collect_subjects(
            paths, export_missing, export_kwargs, reporter, allow_rejected=allow_rejected, trust=trust
        )
        subjects.sort(key=_sort_key)
        reporter.log(f"measuring the CPU's peak FLOP/s on {threads} threads")
        machine = machine_record()
        bound = compute_bound(min(threads, machine["physical_cores"] or threads), quick=peak_quick)

        binders = {}
        for s in subjects:
            if s.open is None or s.status in (S.FAILED, S.UNAVAILABLE):
                continue
            try:
                bind, info = s.open(threads)
            except MissingDependencyError as exc:  # e.g. TensorRT without a GPU: says why
                s.status, s.reason = S.UNAVAILABLE, str(exc)
                continue
            except Exception as exc:  # a backend that cannot load here is a row, not a crash
                s.status, s.reason = S.FAILED, f"{type(exc).__name__}: {exc}"
                continue
            _apply_info(s, info)
            binders[s.key] = (s, bind)

        rng = np.random.default_rng(seed)
        results: dict[int, dict] = {}
        for b in batches:
            fns = {}
            for key, (s, bind) in binders.items():
                lo, hi = s.value_range
                x = rng.uniform(lo, hi, (b, 1, s.image_size, s.image_size)).astype(np.float32)
                fns[key] = bind(x)
            task = f"batch {b}: {len(fns)} backends x {rounds} rounds"
            reporter.start(task, rounds)
            results[b] = measure_interleaved(
                fns, b, seconds, warmup, rounds, on_round=lambda done, total, task=task: reporter.advance(task)
            )
            reporter.finish(task)
    finally:
        if torch_threads is not None:
            torch_side.set_threads(torch_threads)

    rows = _rows(subjects, results, batches, bound)
    return {
        "settings": {
            "batches": batches,
            "latency_batch": batches[0],
            "throughput_batch": batches[-1],
            "threads": threads,
            "seconds": seconds,
            "warmup": warmup,
            "rounds": rounds,
            "seed": seed,
            "input": "uniform random in each model's input range (its preprocessing's value_range)",
            "statistic": "median over interleaved rounds (per-round p50/p90/p99 and img/s)",
            # Rejected artifacts are timed only for investigation; said in every such row too.
            "allow_rejected": bool(allow_rejected),
        },
        "machine": machine,
        "compute_bound": _bound_summary(bound, rows),
        "fastest": fastest_gated(rows),
        "goals": goal_ratios(rows, batches[0], batches[-1], machine["flags"], threads),
        "rows": rows,
    }


def fastest_gated(rows: list[dict]) -> dict:
    """Per model (row group): the exported artifact with the lowest latency and the one with
    the highest throughput, among those that passed the drift gate at the arithmetic they
    ran (leaving out PyTorch, and OpenVINO's CPU-default precision, which no gate checked)."""
    out: dict = {}
    for r in rows:
        if (
            r["status"] != S.PASS
            or r["p50_ms"] is None
            or r.get("path") is None
            or r["backend"].startswith("PyTorch")
            or "CPU default" in r["precision"]
            or r.get("macro_auc") is None
        ):
            continue
        best = out.setdefault(r["group"], {"latency": None, "throughput": None})
        name = {
            "row": f"{r['backend']} {r['precision']}",
            "path": r["path"],
            "p50_ms": r["p50_ms"],
            "throughput_img_s": r["throughput_img_s"],
            "macro_auc": r["macro_auc"],
            "worst_delta": r.get("worst_delta"),
        }
        if best["latency"] is None or r["p50_ms"] < best["latency"]["p50_ms"]:
            best["latency"] = name
        if r["throughput_img_s"] and (
            best["throughput"] is None or r["throughput_img_s"] > best["throughput"]["throughput_img_s"]
        ):
            best["throughput"] = name
        # The fastest gated INT8 and the fastest gated float artifact, for the INT8 verdict.
        kind = "int8" if "INT8" in r["precision"] else "float"
        if best.get(kind) is None or r["p50_ms"] < best[kind]["p50_ms"]:
            best[kind] = name
    for best in out.values():
        int8, flt = best.pop("int8", None), best.pop("float", None)
        if int8 and flt:
            ratio = flt["p50_ms"] / int8["p50_ms"]
            best["int8_vs_float"] = {
                "int8": int8["row"],
                "float": flt["row"],
                "speedup": ratio,
                "note": None
                if ratio >= 1.0
                else (
                    f"INT8 is slower than float on this CPU ({isa_line()}): {int8['row']} {int8['p50_ms']:.2f} ms vs "
                    f"{flt['row']} {flt['p50_ms']:.2f} ms at the smallest batch; "
                    + (
                        "without VNNI, INT8 GEMMs take 3 instructions per multiply-add block and the Q/DQ "
                        "reorders cost more than they save"
                        if "VNNI" not in isa_line()
                        else "the model is overhead-bound (small ops, layout reorders), not compute-bound"
                    )
                    + f": deploy {best['latency']['row']}"
                ),
            }
    return out


def _rows(subjects, results, batches, bound) -> list[dict]:
    lat_b, thr_b = batches[0], batches[-1]
    refs = {s.group: s.key for s in subjects if s.reference and s.key in results[lat_b]}
    measured_peak = bound["measured"]
    theo = bound["theoretical"]
    rows = []
    for s in subjects:
        by_batch = {}
        for b in batches:
            m = results[b].get(s.key)
            if m is None:
                continue
            if m.error and s.status != S.FAILED:
                s.status, s.reason = S.FAILED, m.error
            by_batch[str(b)] = m.summary()
        row = s.row()
        row["by_batch"] = by_batch
        lat = by_batch.get(str(lat_b)) or {}
        thr = by_batch.get(str(thr_b)) or {}
        measured = s.status in (S.PASS, S.REJECTED) and lat.get("p50_ms") is not None
        row.update(
            {
                "p50_ms": lat.get("p50_ms"),
                "p90_ms": lat.get("p90_ms"),
                "p99_ms": lat.get("p99_ms"),
                "throughput_img_s": thr.get("img_s"),
                "speedup": None,
                "speedup_throughput": None,
                "achieved_gflops": None,
                "fraction_of_peak": None,
                "fraction_of_theoretical": None,
            }
        )
        ref = refs.get(s.group)
        if measured and ref is not None:
            row["speedup"] = paired_ratio(results[lat_b][ref], results[lat_b][s.key], "p50_ms")
            if s.key in results[thr_b] and ref in results[thr_b]:
                row["speedup_throughput"] = paired_ratio(results[thr_b][s.key], results[thr_b][ref], "img_s")
        if measured and s.flops and row["throughput_img_s"]:
            achieved = s.flops * row["throughput_img_s"] / 1e9
            row["achieved_gflops"] = achieved
            peak_key = "bf16" if s.compute in ("bf16", "fp16") else s.compute
            if measured_peak.get(peak_key, {}).get("gflops"):
                row["peak_gflops"] = measured_peak[peak_key]["gflops"]
                row["fraction_of_peak"] = achieved / row["peak_gflops"]
            if theo.get("available"):
                row["fraction_of_theoretical"] = achieved / theo[peak_key]
        rows.append(row)
    return rows


def _bound_summary(bound: dict, rows: list[dict]) -> dict:
    out = dict(bound)
    out["how"] = (
        "compute bound of a row = model FLOPs / the CPU's peak FLOP/s at the row's precision; achieved GFLOP/s = "
        "FLOPs per image (FP32 model, conv/linear/matmul only) x throughput at the largest batch; fraction_of_peak "
        "uses the measured GEMM peak, fraction_of_theoretical the theoretical one"
    )
    over = sorted({f"{r['backend']} {r['precision']}" for r in rows if (r.get("fraction_of_peak") or 0) > 1.0})
    if over:
        # Not an error in the rows: a backend's tuned kernels (and turbo clocks, which the
        # theoretical figure's /proc/cpuinfo MHz misses) can beat a 2048x2048 reference GEMM.
        out["above_measured_peak"] = {
            "rows": over,
            "why": "these ran faster than the reference GEMM, so the measured peak understates this CPU's at that "
            "precision (tuned backend kernels; turbo clocks above the /proc/cpuinfo MHz the theoretical "
            "figure uses); treat their fraction as >= 1 of what the GEMM reaches",
        }
    # Gated rows only: an export the drift gate refused is measured and shown, but naming it the
    # "best INT8" would recommend what must not be deployed.
    int8 = [r for r in rows if r["compute"] == "int8" and r.get("fraction_of_peak") and r["status"] == S.PASS]
    if int8:
        best = max(int8, key=lambda r: r["achieved_gflops"])
        out["best_int8"] = {
            "row": f"{best['backend']} {best['precision']}",
            "model": best["model"],
            "achieved_gflops": best["achieved_gflops"],
            "throughput_img_s": best["throughput_img_s"],
            "bound_img_s": best["peak_gflops"] * 1e9 / best["flops"],
            "ratio_to_measured_peak": best["fraction_of_peak"],
            "ratio_to_theoretical_peak": best["fraction_of_theoretical"],
        }
    else:
        out["best_int8"] = None
    return out
