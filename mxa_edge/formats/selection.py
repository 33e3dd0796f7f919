"""``DataSelection``: which images of a CheXpert-layout dataset a run uses, and how their labels
are read. It is the only place a split is decided: training, eval, export (calibration, the drift
gate, QAT), the report and the ablation all call ``DataSelection.load``/``read``, so they cannot
disagree on the views, projections or label policy (a run trained on PA views is gated on PA views).

Stored in the run manifest's ``data`` section and copied into every artifact's ``source_run``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

SPLITS = ("train", "valid")  # CheXpert's own CSVs; valid.csv is the held-out split


@dataclass(frozen=True)
class DataSelection:
    root: str  # CheXpert root: holds train.csv / valid.csv
    uncertainty: str = "u1"  # -1.0 labels: u1 positive (the paper's U-Ones), u0 negative, ignore masked
    blank: str = "negative"  # blank labels: negative, or mask (excluded from loss and metrics)
    frontal_only: bool = True
    ap_pa: str | None = None  # keep one projection ("AP" / "PA"), or both
    fingerprint: dict = field(default_factory=dict)  # split -> dataset_fingerprint, as trained
    counts: dict = field(default_factory=dict)  # split -> number of images, as trained

    # ------------------------------------------------------------------ record

    def to_dict(self) -> dict:
        d = {
            "root": self.root,
            "uncertainty": self.uncertainty,
            "blank": self.blank,
            "frontal_only": self.frontal_only,
            "ap_pa": self.ap_pa,
            "fingerprint": dict(self.fingerprint),
        }
        d.update({f"n_{split}": n for split, n in self.counts.items()})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DataSelection:
        counts = {k[2:]: v for k, v in d.items() if k.startswith("n_") and isinstance(v, int)}
        return cls(
            root=str(d["root"]),
            uncertainty=d.get("uncertainty", "u1"),
            blank=d.get("blank", "negative"),
            frontal_only=bool(d.get("frontal_only", True)),
            ap_pa=d.get("ap_pa"),
            fingerprint=dict(d.get("fingerprint") or {}),
            counts=counts,
        )

    def with_root(self, root) -> DataSelection:
        """The same policy on another copy of the data (``--data DIR``): fingerprints are kept so
        a caller can tell whether the images are the ones the run saw."""
        from mxa_edge.data.chexpert import find_dataset_root

        return replace(self, root=str(find_dataset_root(root)))

    @classmethod
    def for_data(cls, selection: DataSelection | None, data) -> DataSelection:
        """``--data DIR``: ``selection`` (a run's or an artifact's) on that copy of the data, or
        the default policy when the model records none. DatasetError when DIR is no CheXpert root."""
        return (selection or cls(root=str(data))).with_root(data)

    # ------------------------------------------------------------------ reading

    def read(self, split: str):
        """The split's rows (``ChexpertSplit``) after the view filters; ``split`` is a split name
        or a CSV path (a calibration CSV in CheXpert's layout)."""
        from mxa_edge.data.chexpert import read_split

        return read_split(Path(self.root), split, frontal_only=self.frontal_only, ap_pa=self.ap_pa)

    def targets(self, split) -> tuple:
        """(targets, mask) of a ``ChexpertSplit`` under this label policy."""
        from mxa_edge.data.chexpert import targets_and_mask

        return targets_and_mask(split.raw, self.uncertainty, blank=self.blank)

    def load(self, split: str, preprocess, *, limit=None, progress=None, workers: int = 2, cache=None):
        """The split decoded at ``preprocess`` (``mxa_edge.data.arrays.SplitArrays``)."""
        from mxa_edge.data.arrays import load_split_arrays

        return load_split_arrays(
            Path(self.root),
            split,
            preprocess,
            uncertainty=self.uncertainty,
            blank=self.blank,
            frontal_only=self.frontal_only,
            ap_pa=self.ap_pa,
            limit=limit,
            progress=progress,
            workers=workers,
            cache=cache,
        )
