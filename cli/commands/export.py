"""``mxa-edge export``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from mxa_edge import backends
from mxa_edge.gate import DEFAULT_GATE, finding_fails
from mxa_edge_cli.options import JsonOpt, QuietOpt, SeedOpt
from mxa_edge_cli.output import Output

# The choices are the backend registry's (a new target needs no edit here).
Target = Enum("Target", {name: name for name in backends.names()}, type=str)
CalibMethod = Enum("CalibMethod", {name: name for name in backends.CALIB_METHODS}, type=str)
TARGET_HELP = "; ".join(f"{s.name}: {s.display} ({s.files})" for s in backends.all_specs())


def export(
    run: Path = typer.Argument(..., help="Run folder from `mxa-edge train`."),
    target: Target = typer.Option(Target["onnx"], "--target", "-t", help=f"Export target. {TARGET_HELP}."),
    int8: bool = typer.Option(False, "--int8", help="Post-training INT8 quantization with a calibration set."),
    qat: bool = typer.Option(
        False, "--qat", help="Quantization-aware fine-tuning (NNCF), distilled from the FP32 model, then export."
    ),
    fp16: bool = typer.Option(False, "--fp16", help="FP16 weights/compute (TensorRT; OpenVINO IR compression)."),
    calib: Optional[Path] = typer.Option(
        None,
        "--calib",
        help="Calibration images: a folder of images or a CheXpert-layout CSV. Default: 300 stratified "
        "training images.",
    ),
    calib_size: int = typer.Option(300, "--calib-size", min=1, help="Images in the default calibration set."),
    calib_method: CalibMethod = typer.Option(CalibMethod.minmax, "--calib-method", help="Activation range estimation."),
    max_macro_drop: float = typer.Option(
        DEFAULT_GATE.max_macro_drop,
        "--max-macro-drop",
        help="Refuse to publish when the macro AUC drops by more than this.",
    ),
    max_drop: float = typer.Option(
        DEFAULT_GATE.max_drop, "--max-drop", help="Refuse to publish when any pathology's AUC drops by more than this."
    ),
    max_noise: float = typer.Option(
        0.08,
        "--max-noise",
        help="INT8 PTQ: keep the most quantization-sensitive layers in float until the simulated logit noise "
        "(std of the INT8-FP32 logit change over the logit spread, worst finding, on the calibration "
        "images) is at most this. A large value (e.g. 9) keeps every layer INT8.",
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Artifact folder. Default: RUN/exports/<target>-<precision>[-b<N> with --static-batch N].",
    ),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Paired bootstrap resamples for the AUC-change CIs."),
    static_batch: Optional[int] = typer.Option(
        None,
        "--static-batch",
        min=1,
        help="OpenVINO: fix the IR's batch at N (gated as fixed). Faster per call for small models (default "
        "run, batch 1: about 1.6x); the engine then runs any batch in chunks of N.",
    ),
    seed: int = SeedOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Quantize and export a run, then check it pathology by pathology against the FP32 model.

    Every export runs the FP32 PyTorch model and the exported model on the run's validation
    images. If the macro AUC drops by more than --max-macro-drop or any finding's AUC by more
    than --max-drop, the artifact is NOT published under its name (it is kept as
    <name>.rejected/ for inspection) and the command exits non-zero with the drift table.
    """
    from mxa_edge.errors import DriftGateError, MissingDependencyError
    from mxa_edge.export import export_run

    o = Output(json_out, quiet)
    try:
        with o.libraries():
            result = export_run(
                run,
                target.value,
                out,
                int8=int8,
                qat=qat,
                fp16=fp16,
                calib=calib,
                calib_size=calib_size,
                calib_method=calib_method.value,
                max_macro_drop=max_macro_drop,
                max_drop=max_drop,
                n_boot=n_boot,
                max_noise=max_noise,
                static_batch=static_batch,
                seed=seed,
                progress=o.info,
            )
    except (DriftGateError, MissingDependencyError) as exc:
        res = getattr(exc, "result", None)
        if res is not None:
            o.result(_payload(res), lambda c: _render(c, res))
        raise
    o.result(_payload(result), lambda c: _render(c, result))


def _payload(result) -> dict:
    return {
        "artifact": str(result.artifact) if result.artifact else None,
        "rejected": str(result.rejected) if result.rejected else None,
        "passed": result.passed,
        "drift": result.drift,
        "manifest": result.manifest.to_dict(),
    }


def _render(console, result) -> None:
    from rich.table import Table

    d = result.drift
    t = Table(title=f"AUC drift: FP32 PyTorch vs {result.manifest.get('model_id')}", title_justify="left")
    for col in ("Finding", "FP32", "exported", "Δ", "95% CI of Δ", "agree@0.5", ""):
        t.add_column(col, justify="left" if col == "Finding" else "right")
    for name, v in d["per_label"].items():
        if v["delta"] is None:
            t.add_row(name, "[dim]not evaluable[/]", "", "", "", "", "")
            continue
        bad = finding_fails(v["delta"], d["max_drop"], ci=v.get("delta_ci"), mode=d.get("gate_mode", "point"))
        ci = v.get("delta_ci")
        t.add_row(
            name,
            f"{v['auc_ref']:.3f}",
            f"{v['auc_new']:.3f}",
            f"[{'red' if bad else 'green'}]{v['delta']:+.4f}[/]",
            f"{ci[0]:+.4f}…{ci[1]:+.4f}" if ci else "—",
            f"{v['agreement_at_threshold']:.3f}" if v.get("agreement_at_threshold") is not None else "—",
            "[red]DRIFT[/]" if bad else "",
        )
    t.add_section()
    md = d.get("macro_delta")
    t.add_row(
        "[bold]macro[/]",
        f"{d['macro_auc_ref']:.3f}",
        f"{d['macro_auc_new']:.3f}",
        f"{md:+.4f}" if md is not None else "—",
        "",
        f"{d.get('agreement_at_threshold', 0):.3f}",
        "",
    )
    console.print(t)
    verdict = "[green]PASSED[/]" if result.passed else "[red]FAILED[/]"
    console.print(
        f"gate {verdict} (max macro drop {d['max_macro_drop']}, max per-finding drop {d['max_drop']}) on "
        f"{d['n_images']} images"
    )
    if result.artifact:
        console.print(f"artifact: [bold]{result.artifact}[/]  precision {result.manifest['precision']}")
        console.print(f"next: mxa-edge predict IMAGE --model {result.artifact}")
    elif result.rejected:
        console.print(f"[red]not published[/]; kept for inspection as {result.rejected}")
