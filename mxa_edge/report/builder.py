"""``build_report``: an exported artifact -> one self-contained HTML page. The story, in order:

1. load the artifact (every model file's sha256 checked) and its drift.json;
2. the validation split (``data`` or the source run's data root), read with the artifact's
   own preprocessing;
3. scores: the exported model through its runtime engine, the FP32 model through the source
   run's PyTorch weights (each may be unavailable, with the reason), both through the
   artifact's decision rule (calibrated probabilities, as ``predict`` outputs them);
4. the gate v2 table (drift record, or computed here as the export computes it, judged by
   ``mxa_edge.decision.gate``), the subgroup slices, ROC small multiples, reliability before and after
   calibration;
5. the overlay gallery through the runtime Predictor;
6. the optional bench JSON;
7. render and write atomically (temporary file beside ``out``, then rename).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mxa_edge.decision.metrics import evaluate, reliability_curve
from mxa_edge.formats import ArtifactManifest, load_artifact
from mxa_edge.report.tables import NO_RECORD, pathology_table
from mxa_edge.support.errors import ConfigError
from mxa_edge.support.fileio import atomic_path
from mxa_edge.support.outputs import check_output


@dataclass
class ReportData:
    """Everything the page shows, computed; ``html.page`` only formats it."""

    artifact_path: Path
    manifest: ArtifactManifest
    artifact_sha256: str
    drift: dict | None
    validation: object  # scores.Validation
    table: object  # tables.PathologyTable
    curves: list  # [FP32 Scores, exported Scores]
    reliabilities: list  # scores.Reliability: FP32 before / after calibration, exported after
    roc_png: bytes | None = None
    reliability_png: bytes | None = None
    guard_png: bytes | None = None
    figure_why: str | None = None
    gallery: list = field(default_factory=list)
    gallery_why: str | None = None
    has_truth_boxes: bool = False
    bench: object | None = None  # records.Bench
    gaps: list[str] = field(default_factory=list)
    generated: str = ""
    tool_version: str = ""
    signature: str = ""  # provenance.Provenance.describe()
    rejected: str | None = None  # the loud line of an artifact loaded with --allow-rejected


def default_out(artifact_path: Path) -> Path:
    """``<artifact folder name>.report.html`` in the current folder: nothing is written into an artifact."""
    return Path(f"{Path(artifact_path).resolve().name}.report.html")


def build_report(
    artifact,
    data=None,
    bench=None,
    out=None,
    gallery: int = 6,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    allow_rejected: bool = False,
    trust=None,
) -> Path:
    """Write the HTML report of an exported artifact; returns its path.

    ``data``: a CheXpert-layout root for the ROC/calibration/gallery images (default: the source
    run's data root from its manifest). ``bench``: a ``mxa-edge bench --json`` file (optional).
    ``out``: default ``<artifact folder name>.report.html`` in the current folder; checked by
    ``mxa_edge.support.outputs`` before any work (never inside an artifact or run, never over an input,
    an existing file only when it is an earlier report or with ``force``). ``gallery``: overlay
    images (0: none). ``n_boot``: bootstrap resamples for the per-model AUC CIs (and for the
    whole table when the artifact has no drift.json).

    Raises ArtifactError (missing or tampered artifact), DatasetError (a ``data`` folder that
    is not a CheXpert root), ConfigError (bad arguments or an unreadable bench file). Anything
    that merely cannot be computed here (no torch, no source run, no engine for the backend,
    no matplotlib) becomes a stated gap in the page instead.
    """
    import numpy as np

    from mxa_edge import __version__
    from mxa_edge.report import html, records, scores

    say = progress or (lambda msg: None)
    if gallery < 0:
        raise ConfigError(f"--gallery must be 0 or more, got {gallery}")
    if n_boot < 0:
        raise ConfigError(f"n_boot must be 0 or more, got {n_boot}")
    out = Path(out) if out is not None else default_out(artifact)
    check_output(out, "html", inputs=[artifact] + ([bench] if bench is not None else []), force=force)
    say("verifying the artifact")
    art = load_artifact(artifact, allow_rejected=allow_rejected, trust=trust)
    art.path = art.path.absolute()
    bench_rec = records.read_bench(bench) if bench is not None else None  # fail early on a bad file
    drift = art.drift_table()
    gaps: list[str] = []
    if drift is None:
        gaps.append(
            "The artifact has no drift.json: the per-pathology table is computed by this report, not the export record."
        )

    say("reading the validation split")
    run, run_why = scores.source_run(art)
    valid = scores.load_validation(art, data, run, run_why)
    ref = scores.Scores("FP32 (PyTorch, source run)", why=valid.why)
    new = scores.Scores(f"exported ({art.runtime})", why=valid.why)
    if valid.arrays is not None:
        say("scoring the exported model")
        new = scores.exported_scores(art, valid.arrays, drift)
        say("scoring the FP32 model")
        ref = scores.fp32_scores(art, valid.arrays, run, run_why)
    else:
        gaps.append(f"No validation images: {valid.why}. ROC, calibration and gallery are left out.")
    for s in (ref, new):
        if s.probs is None and valid.arrays is not None:
            gaps.append(f"{s.label}: not scored: {s.why}.")
        if s.note:
            gaps.append(f"{s.label}: {s.note}.")

    say("per-pathology metrics")

    labels = list(art.labels)
    thresholds = art.decision.threshold_array()
    computed: dict = {}
    reliabilities = [
        scores.Reliability("FP32, before calibration (sigmoid of the logits)", "ref", False, why=ref.why),
        scores.Reliability("FP32, after calibration (decision rule)", "ref", True, why=ref.why),
        scores.Reliability("exported, after calibration (decision rule)", "new", True, why=new.why),
    ]
    if valid.arrays is not None:
        from mxa_edge.data.subgroups import subgroup_rows

        targets, mask = valid.arrays.targets, valid.arrays.mask
        computed.update(
            targets=targets,
            mask=mask,
            ref_probs=ref.probs,
            new_probs=new.probs,
            thresholds=thresholds,
            subgroups=subgroup_rows(valid.arrays.split),
            split="valid",
        )
        for key, s in (("ref", ref), ("new", new)):
            if s.probs is not None:
                computed[key] = evaluate(
                    targets, s.probs, mask, labels=labels, n_boot=n_boot, seed=seed, threshold=thresholds
                )
        for rel, probs in zip(reliabilities, (ref.uncalibrated, ref.probs, new.probs)):
            if probs is not None:
                rel.curve = reliability_curve(targets, probs, mask)
    table = pathology_table(
        labels,
        drift,
        art.manifest.drift,
        computed,
        valid.same_as_gate,
        n_boot,
        seed,
        fingerprints=art.manifest.source_run.data_fingerprint,
        report_fingerprint=valid.fingerprint,
    )
    not_eval = [r.name for r in table.rows if r.verdict != NO_RECORD and not r.auc_evaluable]
    if not_eval:
        gaps.append(f"AUC not evaluable (one class in the held-out split): {', '.join(not_eval)}.")

    d = ReportData(
        art.path,
        art.manifest,
        records.artifact_sha256(art),
        drift,
        valid,
        table,
        [ref, new],
        reliabilities,
        bench=bench_rec,
        gaps=gaps,
        tool_version=__version__,
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        signature=art.provenance.describe(),
        rejected=art.gate_line() if art.allowed_rejected else None,
    )
    if bench_rec is None:
        gaps.append("No benchmark supplied (--bench).")

    if valid.arrays is not None and (ref.probs is not None or new.probs is not None):
        say("drawing ROC and reliability figures")
        try:
            from mxa_edge.report.figures import reliability_diagram, roc_grid

            aucs = [
                {k: v["auc"] for k, v in computed[key]["per_label"].items()} if key in computed else {}
                for key in ("ref", "new")
            ]
            d.roc_png = roc_grid(labels, np.asarray(targets), np.asarray(mask), d.curves, aucs)
            d.reliability_png = reliability_diagram(reliabilities)
            if new.guard_scores is not None and art.manifest.guard is not None:
                from mxa_edge.report.figures import guard_histogram

                d.guard_png = guard_histogram(new.guard_scores, new.challenge_scores, art.manifest.guard.threshold)
        except ImportError as exc:
            d.figure_why = f"figures need matplotlib ({exc}); install the [train] extra"
            gaps.append(d.figure_why)

    if gallery and valid.arrays is not None:
        say(f"rendering {gallery} overlays")
        from mxa_edge.report.gallery import build_gallery
        from mxa_edge.support.errors import MxaError

        try:
            d.gallery = build_gallery(art.path, valid, gallery, allow_rejected=art.allowed_rejected)
            d.has_truth_boxes = bool(valid.boxes)
        except MxaError as exc:
            d.gallery_why = f"gallery unavailable: {exc}"
            gaps.append(d.gallery_why)
    elif valid.arrays is None:
        d.gallery_why = f"gallery unavailable: no validation images ({valid.why})"
    if gallery and valid.arrays is not None and not valid.boxes:
        gaps.append("The dataset has no boxes.csv: the gallery shows no ground-truth boxes.")

    say(f"writing {out}")
    page = html.page(d)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
        tmp.chmod(0o644)  # mkstemp makes it private; a report is meant to be shared
    return out
