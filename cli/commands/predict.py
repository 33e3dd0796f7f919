"""``mxa-edge predict``: exported artifact + image files -> 14 probabilities, ROI boxes, overlays.

Light on purpose (the point of care has no PyTorch): typer at import, the runtime library
(numpy, Pillow, the engine's runtime; pydicom only for DICOM files) when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mxa_edge.support.outputs import FORCE_HELP
from mxa_edge_cli.options import AllowRejectedOpt, JsonOpt, QuietOpt, TrustOpt

EXIT_SOME_FAILED = 3  # InputImageError's exit code: at least one file could not be predicted


def predict(
    inputs: List[str] = typer.Argument(
        ..., help="Image files (PNG, JPEG, DICOM), folders (searched recursively) or glob patterns.", show_default=False
    ),
    model: Path = typer.Option(
        ..., "--model", "-m", help="Exported artifact folder (from `mxa-edge export`).", show_default=False
    ),
    csv_out: Optional[Path] = typer.Option(
        None,
        "--csv",
        help="Also write one CSV row per image: file, positives, and per finding its calibrated probability, "
        "positive (1/0), threshold and the policy that set it.",
    ),
    overlay: Optional[Path] = typer.Option(
        None, "--overlay", help="Write an overlay PNG per image into this folder (ROI boxes, attention, top findings)."
    ),
    sr_out: Optional[Path] = typer.Option(
        None,
        "--sr",
        help="Write one DICOM Structured Report (TID 1500 measurement report) per study of the DICOM inputs into "
        "this folder: per image and finding the calibrated probability, threshold, decision and policy, the input "
        "guard's verdict, the deepest MXA ROI and the model's identity, referencing the source images. Only the "
        "patient and study identifiers are copied from the source. Non-DICOM inputs get none.",
    ),
    sc_out: Optional[Path] = typer.Option(
        None,
        "--sc",
        help="Write each DICOM input's overlay as an RGB DICOM Secondary Capture into this folder, in the source "
        "study as a new series.",
    ),
    fhir_out: Optional[Path] = typer.Option(
        None,
        "--fhir",
        help="Write one FHIR R4 Bundle (JSON) per study of the DICOM inputs into this folder: a DiagnosticReport "
        "with per image and finding an Observation (calibrated probability, threshold, decision, policy), the "
        "input guard's verdict and the model as a Device (id, version, artifact sha256): the SR's content. "
        "Non-DICOM inputs get none.",
    ),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads. Default: all cores."),
    batch: int = typer.Option(8, "--batch", min=1, help="Images per inference batch."),
    strict_inputs: bool = typer.Option(
        False,
        "--strict-inputs",
        help="Treat images the input guard flags as out of distribution (not like the frontal chest radiographs "
        "the model was trained on) as errors: no probabilities for them, and exit status 3.",
    ),
    no_verify: bool = typer.Option(
        False,
        "--no-verify",
        help="Skip the first-use check that this machine reproduces the artifact's gated outputs "
        "(`mxa-edge verify`). Said in the output when used.",
    ),
    trust: Optional[List[Path]] = TrustOpt,
    allow_rejected: bool = AllowRejectedOpt,
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Predict the 14 findings on images with an exported artifact, offline, without PyTorch.

    Each finding gets a calibrated probability (Platt scaling fitted on the training run's tuning split, so 0.3 means
    about 3 in 10 such images have the finding) and is called positive when that probability reaches its own threshold,
    chosen on the same split by the run's operating-point policy (e.g. youden, sens:0.90), never a flat 0.5.
    Preprocessing, calibration and thresholds come from the artifact's manifest only; ROI boxes are in pixels of the
    original image.

    Every input gets a row in the JSON and CSV output with its status: predicted, skipped (with the reason) or error
    (with the problem; also printed on stderr). The others are still predicted; the exit status is 3 when any file could
    not be read.

    DICOM folders are grouped by study and series; files that are not frontal chest radiographs by their header
    (Modality, BodyPartExamined, ViewPosition: e.g. a lateral view or a CT series) are skipped with the reason, and
    each row carries the UIDs, ViewPosition and the frame used.

    Every image is scored by the artifact's input guard: in_distribution is false (and a warning printed) when the
    image is unlike the frontal chest radiographs the model was trained on, e.g. a lateral view, an inverted film,
    a non-chest image; --strict-inputs turns those into errors. A model trained on this project's phantoms flags
    real radiographs too: that is the guard working.

    On first use of an artifact on a machine, its golden vectors are run and compared with the outputs the
    drift gate checked (`mxa-edge verify`); predict refuses (exit 8) when they do not reproduce.

    Before anything loads: every file's hash, the signature when a trust key is configured (--trust or
    MXA_EDGE_TRUST; exit 10 unless a trusted key signed it) and the drift gate's verdict (exit 9 for a rejected
    artifact unless --allow-rejected). Every record says which: artifact_gate, signature.
    """
    from collections import Counter

    from mxa_edge.runtime.predict import (
        STATUS_ERROR,
        STATUS_PREDICTED,
        STATUS_SKIPPED,
        PredictionError,
        PredictionSkipped,
        Predictor,
        expand_inputs,
    )
    from mxa_edge.support.errors import MxaError
    from mxa_edge.support.outputs import OutputChecker
    from mxa_edge_cli.output import Output, announce_artifact, artifact_status

    o = Output(json_out, quiet)
    files, empty = expand_inputs(inputs)
    for spec in empty:
        _stderr_line(f"warning: {spec}: no images found", typer.colors.YELLOW)
    checker = OutputChecker([*files, model], force=force)  # before any work: outputs never overwrite inputs
    if csv_out is not None:
        checker.check(csv_out, "csv")
    if overlay is not None:
        checker.check(overlay, "overlay-dir")
        for name in _overlay_names(files):
            checker.check(overlay / name, "overlay")
        try:
            overlay.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MxaError(f"{overlay}: cannot create the overlay folder ({exc.strerror or exc})") from None
    for folder, kind in ((sr_out, "sr-dir"), (sc_out, "sc-dir"), (fhir_out, "fhir-dir")):
        if folder is not None:
            checker.check(folder, kind)

    predictor = Predictor(model, threads, verify=not no_verify, allow_rejected=allow_rejected, trust=trust)
    announce_artifact(o, predictor.artifact)
    status = artifact_status(predictor.artifact)  # on every record: the gate's verdict and the signature
    if no_verify:
        _stderr_line(
            "warning: --no-verify: this machine was not checked against the artifact's gated outputs",
            typer.colors.YELLOW,
        )
    elif predictor.verification is not None:
        o.info(f"verified {model} on this machine ({predictor.verification.isa}): PASS")
    records, counts, overlay_names = [], Counter(), set()
    studies = _StudyOutputs(predictor.artifact, sr_out, sc_out, o, fhir_out)
    keep_image = overlay is not None or sc_out is not None
    for item in predictor.predict_files(files, batch, keep_image=keep_image, strict_inputs=strict_inputs):
        record = {**item.to_dict(), **status}
        counts[record["status"]] += 1
        if isinstance(item, PredictionError):
            _stderr_line(f"error: {item.file}: {item.problem}", typer.colors.RED)
        elif isinstance(item, PredictionSkipped):
            o.info(f"skipped {item.file}: {item.reason}")
        else:
            if item.in_distribution is False:
                counts["flagged"] += 1
                _stderr_line(
                    f"warning: {item.file}: not like the frontal chest radiographs the model was trained on "
                    f"(input-guard score {item.ood_score:.2f} > threshold {item.ood_threshold:.2f}); "
                    "its findings are not reliable",
                    typer.colors.YELLOW,
                )
            if overlay is not None:
                record["overlay"] = str(_write_overlay(item, overlay, overlay_names, checker))
            if studies.wanted:
                studies.add(item, record)  # writes the previous study's SR/SC when a new study starts
            if sc_out is None:
                item.image = None  # do not keep every decoded image alive (--sc: until its study is written)
            if not (json_out or quiet):
                _print_result(o.out, item, record.get("overlay"))
                if predictor.artifact.allowed_rejected:
                    o.out.print(f"model: {status['artifact_gate']}", style="bold red", markup=False, soft_wrap=True)
        records.append(record)

    studies.finish()
    if csv_out is not None:
        _write_csv(csv_out, records, predictor.labels)
    o.result(records)
    failed = counts[STATUS_ERROR]
    o.info(
        f"{counts[STATUS_PREDICTED]} of {len(files)} file(s) predicted with {predictor.model_id}"
        + (f"; {counts['flagged']} flagged by the input guard" if counts["flagged"] else "")
        + (f"; {counts[STATUS_SKIPPED]} skipped" if counts[STATUS_SKIPPED] else "")
        + (f"; {failed} could not be predicted (see the errors above)" if failed else "")
    )
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


class _StudyOutputs:
    """--sr / --sc / --fhir: the predicted DICOM images of a study are held until the study ends (predict_files
    yields each study's files together), then its SR, SCs and FHIR bundle are written and the kept images dropped."""

    def __init__(self, artifact, sr_out: Optional[Path], sc_out: Optional[Path], o, fhir_out: Optional[Path] = None):
        self.artifact, self.sr_out, self.sc_out, self.o = artifact, sr_out, sc_out, o
        self.fhir_out = fhir_out
        self.wanted = sr_out is not None or sc_out is not None or fhir_out is not None
        self.pending: list = []  # (result, record) of the current study
        self.not_dicom = 0

    def add(self, item, record: dict) -> None:
        study = (item.dicom or {}).get("study_uid")
        if not study:
            self.not_dicom += 1
            item.image = None
            return
        if self.pending and self.pending[0][0].dicom["study_uid"] != study:
            self.flush()
        self.pending.append((item, record))

    def flush(self) -> None:
        from mxa_edge.runtime.dicom_out import study_reports, write_datasets

        if self.pending:
            results = [item for item, _ in self.pending]
            sr, scs, fhir = None, [], None
            if self.sr_out is not None or self.sc_out is not None:
                datasets = study_reports(results, self.artifact, secondary_capture=self.sc_out is not None)
                sr = write_datasets(datasets[:1], self.sr_out)[0] if self.sr_out is not None else None
                scs = write_datasets(datasets[1:], self.sc_out) if self.sc_out is not None else []
            if self.fhir_out is not None:
                from mxa_edge.runtime.fhir_out import study_bundle, write_bundle

                fhir = write_bundle(study_bundle(results, self.artifact), self.fhir_out)
            for k, (item, record) in enumerate(self.pending):
                if sr is not None:
                    record["sr"] = str(sr)
                if scs:
                    record["sc"] = str(scs[k])
                if fhir is not None:
                    record["fhir"] = str(fhir)
                item.image = None
            study = results[0].dicom["study_uid"]
            written = ([sr] if sr else []) + scs + ([fhir] if fhir else [])
            self.o.info(f"study …{study[-12:]}: " + ", ".join(str(p) for p in written))
            self.pending = []

    def finish(self) -> None:
        self.flush()
        if self.not_dicom:
            dicom = ["SR/SC"] if self.sr_out is not None or self.sc_out is not None else []
            what = "/".join(dicom + (["FHIR"] if self.fhir_out is not None else []))
            self.o.info(
                f"note: {self.not_dicom} predicted input(s) are not DICOM images of a study: no {what} for them"
            )


def _stderr_line(message: str, colour: str) -> None:
    # One physical line per message (a rich console would wrap long paths).
    typer.secho(message, err=True, fg=colour)


def _overlay_name(file, used: set[str]) -> str:
    """``<stem>.overlay.png``, or ``<stem>-<n>.overlay.png`` for the same file name in two folders."""
    stem = Path(file).stem or "image"
    name, n = f"{stem}.overlay.png", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.overlay.png"
    used.add(name)
    return name


def _overlay_names(files) -> list[str]:
    """The overlay names if every file is predicted, checked before any work; when some files
    fail, a later name may differ, and ``_write_overlay`` checks each name again as it writes."""
    used: set[str] = set()
    return [_overlay_name(f, used) for f in files]


def _write_overlay(item, folder: Path, used: set[str], checker) -> Path:
    """The overlay PNG, tagged as ours (``outputs.OVERLAY_PNG_SOFTWARE``) so a rerun may replace it."""
    from PIL.PngImagePlugin import PngInfo

    from mxa_edge.runtime.overlay import render_overlay
    from mxa_edge.support.errors import MxaError
    from mxa_edge.support.fileio import atomic_path
    from mxa_edge.support.outputs import OVERLAY_PNG_SOFTWARE, PNG_SOFTWARE_KEY

    path = checker.check(folder / _overlay_name(item.file, used), "overlay")
    info = PngInfo()
    info.add_text(PNG_SOFTWARE_KEY, OVERLAY_PNG_SOFTWARE)
    try:
        img = render_overlay(item.image, item)
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG", pnginfo=info)
        return path
    except OSError as exc:
        raise MxaError(f"{path}: cannot write the overlay ({exc.strerror or exc})") from None


CSV_DICOM_FIELDS = ("study_uid", "series_uid", "sop_uid", "modality", "body_part", "view_position", "frame")


def _write_csv(path: Path, records: list[dict], labels) -> None:
    """One row per input, whatever became of it: a worklist script sees every file."""
    import csv

    from mxa_edge.support.errors import MxaError
    from mxa_edge.support.fileio import atomic_path

    try:
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            fields = ("probability", "positive", "threshold", "policy")
            w.writerow(
                [
                    "file",
                    "status",
                    "message",
                    *CSV_DICOM_FIELDS,
                    "in_distribution",
                    "ood_score",
                    "ood_threshold",
                    "positives",
                    *(f"{k} {f}" for k in labels for f in fields),
                ]
            )
            for r in records:
                dicom = r.get("dicom") or {}
                row = [r["file"], r["status"], r.get("error") or r.get("reason") or ""]
                row += ["" if dicom.get(k) is None else dicom[k] for k in CSV_DICOM_FIELDS]
                if "findings" not in r:
                    w.writerow(row + [""] * (4 + 4 * len(labels)))
                    continue
                ind = r.get("in_distribution")
                row += [
                    "" if ind is None else int(ind),
                    "" if r.get("ood_score") is None else f"{r['ood_score']:.4f}",
                    "" if r.get("ood_threshold") is None else f"{r['ood_threshold']:.4f}",
                    ";".join(r["positives"]),
                ]
                for k in labels:
                    f = r["findings"][k]
                    prob, thr = _decision_figures(f["probability"], f["threshold"])
                    row += [prob, int(f["positive"]), thr, f["policy"]]
                w.writerow(row)
    except OSError as exc:
        raise MxaError(f"{path}: cannot write the CSV ({exc.strerror or exc})") from None


def _print_result(console, item, overlay_path) -> None:
    from rich.table import Table

    title = f"{item.file}  ({item.width}x{item.height})"
    if item.dicom:
        d = item.dicom
        title += (
            f"  study …{d['study_uid'][-12:]} series …{d['series_uid'][-8:]} {d['view_position'] or 'no ViewPosition'}"
        )
        if d.get("frame") is not None:
            title += f" frame {d['frame']} of {d['n_frames']}"
    if item.in_distribution is False:
        title += "  [bold yellow]OUT OF DISTRIBUTION[/]"
    table = Table(title=title, title_justify="left")
    table.add_column("Finding")
    table.add_column("Probability (calibrated)", justify="right")
    table.add_column("Threshold", justify="right")
    table.add_column("Set by")
    table.add_column("")
    for label, p in item.ranked():
        positive = label in item.positives
        name = f"[bold]{label}[/]" if positive else label
        table.add_row(
            name,
            f"{p:.3f}",
            f"{item.thresholds[label]:.3f}",
            item.policies.get(label, ""),
            "[bold red]positive[/]" if positive else "",
        )
    console.print(table)
    if item.roi_boxes:
        x1, y1, x2, y2 = item.roi_boxes[-1]
        console.print(f"deepest MXA ROI (pixels): x {x1:.0f}–{x2:.0f}, y {y1:.0f}–{y2:.0f}", soft_wrap=True)
    if overlay_path:
        console.print(f"overlay: {overlay_path}", soft_wrap=True, markup=False)


def _decision_figures(probability: float, threshold: float) -> tuple[str, str]:
    """Probability and threshold as CSV text that a reader can re-check the decision with.

    Six decimals read well, but a probability within 1e-6 of its threshold would print equal to it
    (or past it) while the decision, made on the exact values, went the other way; those two are
    written at full precision instead, so ``probability >= threshold`` on the CSV is the decision."""
    prob, thr = f"{probability:.6f}", f"{threshold:.6f}"
    if (float(prob) >= float(thr)) != (probability >= threshold):
        prob, thr = repr(float(probability)), repr(float(threshold))
    return prob, thr
