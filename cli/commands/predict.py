"""``mxa-edge predict``: exported artifact + image files -> 14 probabilities, ROI boxes, overlays.

Light on purpose (the point of care has no PyTorch): typer at import, the runtime library
(numpy, Pillow, the engine's runtime; pydicom only for DICOM files) when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mxa_edge_cli.options import JsonOpt, QuietOpt

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
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Inference threads. Default: all cores."),
    batch: int = typer.Option(8, "--batch", min=1, help="Images per inference batch."),
    no_verify: bool = typer.Option(
        False,
        "--no-verify",
        help="Skip the first-use check that this machine reproduces the artifact's gated outputs "
        "(`mxa-edge verify`). Said in the output when used.",
    ),
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Predict the 14 findings on images with an exported artifact, offline, without PyTorch.

    Each finding gets a calibrated probability (Platt scaling fitted on the training run's tuning split, so 0.3 means
    about 3 in 10 such images have the finding) and is called positive when that probability reaches its own threshold,
    chosen on the same split by the run's operating-point policy (e.g. youden, sens:0.90), never a flat 0.5.
    Preprocessing, calibration and thresholds come from the artifact's manifest only; ROI boxes are in pixels of the
    original image.

    Files that cannot be read are reported on stderr, one line each; the others are still predicted,
    and the exit status is 3.

    The model was trained on frontal chest radiographs: it cannot recognise a lateral view or a non-chest image as such.

    On first use of an artifact on a machine, its golden vectors are run and compared with the outputs the
    drift gate checked (`mxa-edge verify`); predict refuses (exit 8) when they do not reproduce.
    """
    from mxa_edge.errors import MxaError
    from mxa_edge.runtime.predict import PredictionError, Predictor, expand_inputs
    from mxa_edge_cli.output import Output

    o = Output(json_out, quiet)
    files, empty = expand_inputs(inputs)
    for spec in empty:
        _stderr_line(f"warning: {spec}: no images found", typer.colors.YELLOW)
    if overlay is not None:
        try:
            overlay.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MxaError(f"{overlay}: cannot create the overlay folder ({exc.strerror or exc})") from None

    predictor = Predictor(model, threads, verify=not no_verify)
    if no_verify:
        _stderr_line(
            "warning: --no-verify: this machine was not checked against the artifact's gated outputs",
            typer.colors.YELLOW,
        )
    elif predictor.verification is not None:
        o.info(f"verified {model} on this machine ({predictor.verification.isa}): PASS")
    results, failed, overlay_names = [], 0, set()
    for item in predictor.predict_files(files, batch, keep_image=overlay is not None):
        if isinstance(item, PredictionError):
            failed += 1
            _stderr_line(f"error: {item.file}: {item.problem}", typer.colors.RED)
            continue
        record = item.to_dict()
        if overlay is not None:
            record["overlay"] = str(_write_overlay(item, overlay, overlay_names))
            item.image = None  # do not keep every decoded image alive
        results.append(record)
        if not (json_out or quiet):
            _print_result(o.out, item, record.get("overlay"))

    if csv_out is not None:
        _write_csv(csv_out, results, predictor.labels)
    o.result(results)
    o.info(
        f"{len(results)} of {len(files)} image(s) predicted with {predictor.model_id}"
        + (f"; {failed} could not be read (see the errors above)" if failed else "")
    )
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _stderr_line(message: str, colour: str) -> None:
    # One physical line per message (a rich console would wrap long paths).
    typer.secho(message, err=True, fg=colour)


def _write_overlay(item, folder: Path, used: set[str]) -> Path:
    from mxa_edge.errors import MxaError
    from mxa_edge.runtime.overlay import save_overlay

    stem = Path(item.file).stem or "image"
    name, n = f"{stem}.overlay.png", 1
    while name in used:  # same file name in two folders
        n += 1
        name = f"{stem}-{n}.overlay.png"
    used.add(name)
    try:
        return save_overlay(item.image, item, folder / name)
    except OSError as exc:
        raise MxaError(f"{folder / name}: cannot write the overlay ({exc.strerror or exc})") from None


def _write_csv(path: Path, records: list[dict], labels) -> None:
    import csv

    from mxa_edge.errors import MxaError
    from mxa_edge.fileio import atomic_path

    try:
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            fields = ("probability", "positive", "threshold", "policy")
            w.writerow(["file", "positives", *(f"{k} {f}" for k in labels for f in fields)])
            for r in records:
                row = [r["file"], ";".join(r["positives"])]
                for k in labels:
                    f = r["findings"][k]
                    row += [f"{f['probability']:.6f}", int(f["positive"]), f"{f['threshold']:.6f}", f["policy"]]
                w.writerow(row)
    except OSError as exc:
        raise MxaError(f"{path}: cannot write the CSV ({exc.strerror or exc})") from None


def _print_result(console, item, overlay_path) -> None:
    from rich.table import Table

    table = Table(title=f"{item.file}  ({item.width}x{item.height})", title_justify="left")
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
