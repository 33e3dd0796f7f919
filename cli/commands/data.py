"""``mxa-edge data``: make and inspect datasets."""

from __future__ import annotations

from pathlib import Path

import typer

from mxa_edge_cli.options import JsonOpt, QuietOpt
from mxa_edge_cli.output import Output

app = typer.Typer(help="Make and inspect CheXpert-layout datasets.", no_args_is_help=True)


@app.command("phantom")
def phantom(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder to write the dataset into (the root is OUT/CheXpert-phantom)."
    ),
    n_train: int = typer.Option(2000, "--n-train", min=1, help="Training images (incl. ~10% lateral views)."),
    n_valid: int = typer.Option(
        500, "--n-valid", min=1, help="Validation images (frontal, labels 0/1 only, as CheXpert's valid)."
    ),
    size: int = typer.Option(256, "--size", min=64, help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives byte-identical output."),
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Generate synthetic frontal chest radiographs (CXR phantoms) in CheXpert's exact layout.

    All 14 findings appear as visible, mostly localized changes with CheXpert-like prevalences,
    uncertain (-1.0) and blank labels and lateral views; boxes.csv holds every finding's
    ground-truth box. Synthetic images: for exercising the pipeline, not for clinical claims.
    """
    from mxa_edge.data.phantom import generate_phantom_dataset

    o = Output(json_out, quiet)
    root = generate_phantom_dataset(
        out,
        n_train=n_train,
        n_valid=n_valid,
        size=size,
        seed=seed,
        progress=o.reporter().callback("generating phantoms"),
    )
    summary = _summary(root)
    o.result(summary, lambda c: _render_summary(c, summary))


@app.command("info")
def info(
    root: Path = typer.Argument(..., help="CheXpert-layout dataset root (or its parent)."),
    json_out: bool = JsonOpt,
):
    """Count images and label values per finding in a CheXpert-layout dataset."""
    from mxa_edge.data.chexpert import find_dataset_root

    o = Output(json_out)
    summary = _summary(find_dataset_root(root))
    o.result(summary, lambda c: _render_summary(c, summary))


def _summary(root: Path) -> dict:
    import numpy as np

    from mxa_edge.data.chexpert import dataset_fingerprint, read_split
    from mxa_edge.labels import CHEXPERT_LABELS

    out = {"root": str(root), "splits": {}}
    for split in ("train", "valid"):
        if not (root / f"{split}.csv").is_file():
            continue
        all_rows = read_split(root, split, frontal_only=False)
        frontal = read_split(root, split, frontal_only=True)
        raw = frontal.raw
        out["splits"][split] = {
            "images": len(all_rows),
            "frontal": len(frontal),
            "fingerprint": dataset_fingerprint(frontal),
            "labels": {
                name: {
                    "positive": int(np.sum(raw[:, j] == 1)),
                    "uncertain": int(np.sum(raw[:, j] == -1)),
                    "negative": int(np.sum(raw[:, j] == 0)),
                    "blank": int(np.sum(np.isnan(raw[:, j]))),
                }
                for j, name in enumerate(CHEXPERT_LABELS)
            },
        }
    boxes = root / "boxes.csv"
    if boxes.is_file():
        out["boxes"] = sum(1 for _ in boxes.open()) - 1
    return out


def _render_summary(console, summary: dict) -> None:
    from rich.table import Table

    console.print(f"[bold]{summary['root']}[/]")
    for split, s in summary["splits"].items():
        t = Table(
            title=f"{split}: {s['images']} images, {s['frontal']} frontal (fingerprint {s['fingerprint']})",
            title_justify="left",
        )
        for col in ("Finding", "1.0", "-1.0", "0.0", "blank"):
            t.add_column(col, justify="left" if col == "Finding" else "right")
        for name, v in s["labels"].items():
            t.add_row(name, str(v["positive"]), str(v["uncertain"]), str(v["negative"]), str(v["blank"]))
        console.print(t)
    if "boxes" in summary:
        console.print(f"boxes.csv: {summary['boxes']} ground-truth finding boxes")


@app.command("cache")
def cache(
    root: Path = typer.Argument(..., help="CheXpert-layout dataset root."),
    size: int = typer.Option(224, "--size", help="Training resolution to cache (the model's --image-size)."),
    splits: str = typer.Option("train,valid", "--splits", help="Comma-separated splits."),
    include_lateral: bool = typer.Option(
        False, "--include-lateral", help="Cache lateral views too (training skips them by default)."
    ),
    workers: int = typer.Option(2, "--workers", min=1, help="Decoding threads."),
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Decode, centre-crop and resize a dataset once into a memory-mapped uint8 cache.

    Training at that resolution then reads the cache instead of decoding JPEGs every epoch
    (it is found automatically; the key covers the CSV's content and the preprocessing).
    """
    from mxa_edge.data.cache import build_cache
    from mxa_edge.data.chexpert import find_dataset_root, read_split
    from mxa_edge.imaging.preprocess import Preprocess

    o = Output(json_out, quiet)
    root = find_dataset_root(root)
    pp = Preprocess(image_size=size)
    out = {}
    for split in [s.strip() for s in splits.split(",") if s.strip()]:
        s = read_split(root, split, frontal_only=not include_lateral)
        folder = build_cache(s, pp, workers=workers, progress=o.reporter().callback(f"caching {split} at {size}px"))
        out[split] = {"folder": str(folder), "images": len(s), "bytes": (folder / "images.u8").stat().st_size}
    o.result(
        {"root": str(root), "size": size, "splits": out},
        lambda c: [
            c.print(f"{k}: {v['images']} images, {v['bytes'] / 1e6:.1f} MB -> {v['folder']}") for k, v in out.items()
        ],
    )
