"""``mxa-edge export``."""

from __future__ import annotations

import dataclasses
import os
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from mxa_edge import backends
from mxa_edge.decision.gate import DEFAULT_GATE, MODES
from mxa_edge.formats.precision import Int8Scheme
from mxa_edge.torch_side.export.settings import EXPORT_DEFAULTS
from mxa_edge_cli.options import JsonOpt, QuietOpt, SeedOpt
from mxa_edge_cli.output import Output

# The choices are the library's: the backend registry's (a new target needs no edit here), the gate's modes.
GateMode = Enum("GateMode", {mode: mode for mode in MODES}, type=str)
Target = Enum("Target", {name: name for name in backends.names()}, type=str)
CalibMethod = Enum("CalibMethod", {name: name for name in backends.CALIB_METHODS}, type=str)
TARGET_HELP = "; ".join(f"{s.name}: {s.display} ({s.files})" for s in backends.all_specs())
# The defaults too: the gate's bounds are DEFAULT_GATE's, the rest ExportConfig's (export_run's keyword
# defaults; torch-free, so `mxa-edge` starts without the pipeline). On/off flags are off unless given;
# tests/test_architecture.py checks that leaving each one off means the library's default.
_RUN = dataclasses.asdict(EXPORT_DEFAULTS)


def export(
    run: Path = typer.Argument(..., help="Run folder from `mxa-edge train`."),
    target: Target = typer.Option(Target(_RUN["target"]), "--target", "-t", help=f"Export target. {TARGET_HELP}."),
    int8: bool = typer.Option(False, "--int8", help="Post-training INT8 quantization with a calibration set."),
    qat: bool = typer.Option(
        False, "--qat", help="Quantization-aware fine-tuning (NNCF), distilled from the FP32 model, then export."
    ),
    fp16: bool = typer.Option(False, "--fp16", help="FP16 weights/compute (TensorRT; OpenVINO IR compression)."),
    calib: Optional[Path] = typer.Option(
        None,
        "--calib",
        help="Calibration images: a folder of images or a CheXpert-layout CSV. Default: "
        f"{_RUN['calib_size']} stratified training images.",
    ),
    calib_size: int = typer.Option(
        _RUN["calib_size"], "--calib-size", min=1, help="Images in the default calibration set."
    ),
    calib_method: CalibMethod = typer.Option(
        CalibMethod(_RUN["calib_method"]), "--calib-method", help="Activation range estimation."
    ),
    max_macro_drop: float = typer.Option(
        DEFAULT_GATE.max_macro_drop,
        "--max-macro-drop",
        help="Refuse to publish when the macro AUC drops by more than this.",
    ),
    max_drop: float = typer.Option(
        DEFAULT_GATE.max_drop, "--max-drop", help="Refuse to publish when any finding's AUC drops by more than this."
    ),
    max_sens_drop: float = typer.Option(
        DEFAULT_GATE.max_sens_drop,
        "--max-sens-drop",
        help="Refuse when any finding's sensitivity at its threshold drops by more than this (or by more than one "
        "image, 1/positives, when that is coarser).",
    ),
    max_spec_drop: float = typer.Option(
        DEFAULT_GATE.max_spec_drop,
        "--max-spec-drop",
        help="The same for specificity (one image = 1/negatives).",
    ),
    min_agreement: float = typer.Option(
        DEFAULT_GATE.min_agreement,
        "--min-agreement",
        help="Refuse when, for any finding, fewer than this share of images get the same decision from both models.",
    ),
    max_ece_increase: float = typer.Option(
        DEFAULT_GATE.max_ece_increase, "--max-ece-increase", help="Refuse when the calibration error rises by more."
    ),
    max_guard_flag_increase: float = typer.Option(
        DEFAULT_GATE.max_guard_flag_increase,
        "--max-guard-flag-increase",
        help="Refuse when the input guard flags a larger share of held-out images as out of distribution than with "
        "the FP32 model, by more than this (never finer than one image).",
    ),
    gate_on: GateMode = typer.Option(
        GateMode(DEFAULT_GATE.mode),
        "--gate-on",
        help="point: gate the point estimates (strict, the default); ci: fail a check only when its whole paired "
        "95% bootstrap interval lies beyond the bound (for small validation sets).",
    ),
    gate_subgroups: bool = typer.Option(
        False,
        "--gate-subgroups",
        help="Also gate each slice of the CSV's Sex, age band (<40, 40-65, >65) and AP/PA columns (always reported).",
    ),
    max_noise: float = typer.Option(
        _RUN["max_noise"],
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
    n_boot: int = typer.Option(
        _RUN["n_boot"], "--n-boot", min=0, help="Paired bootstrap resamples for the AUC-change CIs."
    ),
    static_batch: Optional[int] = typer.Option(
        None,
        "--static-batch",
        min=1,
        help="OpenVINO: fix the IR's batch at N (gated as fixed). Faster per call for small models (default "
        "run, batch 1: about 1.6x); the engine then runs any batch in chunks of N.",
    ),
    int8_scheme: Int8Scheme = typer.Option(
        Int8Scheme(_RUN["int8_scheme"]),
        "--int8-scheme",
        help="INT8 weight layout. portable (default): 7-bit weights, the same results on every x86 CPU "
        "(AVX2 workstations compute with saturating 16-bit sums that full-range weights overflow); checked "
        "on the AVX2 kernel path through qemu-x86_64 at export when this CPU has VNNI. vnni: full 8-bit "
        "weights, slightly more precise, for sites that deploy only on VNNI/AMX CPUs; `verify` refuses such "
        "an artifact on an AVX2 CPU.",
        case_sensitive=False,
    ),
    sign_key: Optional[Path] = typer.Option(
        None,
        "--sign-key",
        envvar="MXA_EDGE_SIGNING_KEY",
        help="Sign the published artifact with this EC private key (`mxa-edge keys`; OpenSSF model-signing, "
        "offline) so `predict/verify --trust PUBKEY` accept it. A rejected export is never signed. "
        "Or sign after review: `mxa-edge sign ARTIFACT --key KEY`.",
        show_default=False,
    ),
    seed: int = SeedOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Quantize and export a run, then check it finding by finding against the FP32 model (gate v2).

    Every export runs the FP32 PyTorch model and the exported model on the run's held-out images (valid.csv),
    both calibrated and thresholded by the run's decision rule, i.e. on what predict outputs. Per finding:
    AUC change (--max-drop; macro: --max-macro-drop), sensitivity and specificity change at its threshold
    (--max-sens-drop, --max-spec-drop), decision agreement (--min-agreement); and the ECE change. If any check
    fails, the artifact is NOT published under its name (it is kept as <name>.rejected/ for inspection) and the
    command exits non-zero with the drift table. Subgroup slices are always in drift.json.
    """
    from mxa_edge.decision.gate import GateSpec
    from mxa_edge.support.errors import DriftGateError, MissingDependencyError
    from mxa_edge.torch_side.export import export_run

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
                gate=GateSpec(
                    max_macro_drop=max_macro_drop,
                    max_drop=max_drop,
                    mode=gate_on.value,
                    max_sens_drop=max_sens_drop,
                    max_spec_drop=max_spec_drop,
                    min_agreement=min_agreement,
                    max_ece_increase=max_ece_increase,
                    max_guard_flag_increase=max_guard_flag_increase,
                    subgroups=gate_subgroups,
                ),
                n_boot=n_boot,
                max_noise=max_noise,
                static_batch=static_batch,
                int8_scheme=int8_scheme,
                sign_key=sign_key,
                sign_password=os.environ.get("MXA_EDGE_SIGNING_KEY_PASSWORD") or None,
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
        "signed_by": result.signed_by,
        "drift": result.drift,
        "manifest": result.manifest.to_dict(),
    }


def _render(console, result) -> None:
    from mxa_edge_cli.render import drift_table

    d, m = result.drift, result.manifest.to_dict()
    console.print(drift_table(d, f"Gate v2: FP32 PyTorch vs {m['model_id']}"))
    verdict = "[green]PASSED[/]" if result.passed else "[red]FAILED[/]"
    g = d.get("gate") or {}
    console.print(
        f"gate {verdict} on {d['n_images']} held-out images ({g.get('mode', 'point')} estimates): AUC drop ≤ "
        f"{g.get('max_drop')} (macro {g.get('max_macro_drop')}), sensitivity/specificity drop ≤ "
        f"{g.get('max_sens_drop')}/{g.get('max_spec_drop')} (or one image), agreement ≥ {g.get('min_agreement')}, "
        f"ECE rise ≤ {g.get('max_ece_increase')}, input-guard flag-rate rise ≤ {g.get('max_guard_flag_increase')}"
    )
    guard = d.get("guard")
    if guard:
        challenge = ", ".join(
            f"{kind} {v['flagged']:.0%} of {v['n']}" for kind, v in (guard.get("challenge") or {}).items()
        )
        console.print(
            f"input guard (threshold {guard['threshold']:.2f}): flags {guard['flag_rate_ref']:.1%} of held-out images "
            f"with FP32, {guard['flag_rate_new']:.1%} exported (agreement {guard['agreement']:.1%}); flags {challenge}"
        )
    checked = d.get("checked_on")
    if checked and checked.get("int8_scheme"):
        console.print(f"INT8 scheme {checked['int8_scheme']}; checked on: {_checked_classes(checked)}")
    for line in d.get("failures") or []:
        console.print(f"  [red]✗[/] {line}")
    subs = d.get("subgroups") or {}
    if subs:
        parts = []
        for name, sub in subs.items():
            if sub.get("status"):
                parts.append(f"{name}: [dim]{sub['status']}[/]")
            else:
                parts.append(f"{name}: {'[green]pass[/]' if sub.get('passed') else '[red]FAIL[/]'}")
        gated = "gated" if g.get("subgroups") else "reported, not gated (--gate-subgroups)"
        console.print(f"subgroups ({gated}): " + "; ".join(parts))
    if result.artifact:
        p = m["precision"]
        console.print(
            f"artifact: [bold]{result.artifact}[/]  ({p.get('weights')} weights, {p.get('activations')} activations, "
            f"runs as {p.get('inference_precision')})"
        )
        if result.signed_by:
            console.print(f"signed with key {result.signed_by[:16]} ({result.artifact / 'model.sig'})", markup=False)
        else:
            console.print("unsigned: sign it after review with `mxa-edge sign ARTIFACT --key KEY`", markup=False)
        console.print(f"next: mxa-edge predict IMAGE --model {result.artifact}")
    elif result.rejected:
        console.print(f"[red]not published[/]; kept for inspection as {result.rejected}")


def _checked_classes(checked: dict) -> str:
    """``avx512-vnni (native), avx2 (qemu-x86_64 -cpu Haswell: max |Δlogit| 0.0030 ≤ 0.05)``."""
    parts = []
    for cls, e in (checked.get("classes") or {}).items():
        if not e.get("checked"):
            parts.append(
                f"{cls} [dim]not checked: {e.get('why') or e.get('how')}[/]"
                + (f"; {e['bound']}" if e.get("bound") else "")
            )
        elif "tolerance" in e:
            mark = "[green]✓[/]" if e.get("passed") else "[red]✗[/]"
            parts.append(
                f"{cls} {mark} ({e['how']}: max |Δlogit| {e['max_abs_logit']:.4f}, tolerance {e['tolerance']:.4f})"
            )
        else:
            parts.append(f"{cls} ({e['how']})")
    return "; ".join(parts)
