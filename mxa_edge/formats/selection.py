"""``DataSelection``: which images of a CheXpert-layout dataset a run uses, and how their labels
are read. It is the only place a split is decided: training, eval, export (calibration, the drift
gate, QAT), the report and the ablation all call ``DataSelection.load``/``read``, so they cannot
disagree on the views, projections or label policy (a run trained on PA views is gated on PA views).

Three roles, never mixed: "train" fits the weights; "tune" chooses everything else a run
chooses (epoch, calibration, thresholds, accuracy control); "valid" (valid.csv) only judges.
"train" and "tune" are carved from train.csv at patient level (``mxa_edge.data.split``) after
the view filters, so together they are exactly the filtered train.csv, and a change of label
policy does not move the carve. A record without ``tune_fraction`` predates the carve: it
trained on all of train.csv and has no tuning split.

Several datasets (``--data A --data B``: ``root`` and ``more_roots``) merge the way a site's
datasets have different label sets: each keeps its own tuning carve and held-out split, a finding
a dataset never labels (blank on every row of its train.csv) is masked for that dataset's images
rather than read as a negative, and every row knows its dataset (``ChexpertSplit.dataset``: a
subgroup slice the gate and the report judge). The record keeps every dataset's fingerprint.

Stored in the run manifest's ``data`` section and copied into every artifact's ``source_run``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mxa_edge.data.arrays import SplitArrays, load_split_arrays
from mxa_edge.data.chexpert import (
    concat_splits,
    find_dataset_root,
    never_labelled,
    read_split,
    subset,
    targets_and_mask,
)
from mxa_edge.data.split import check_tune_fraction, check_tune_seed, tuning_rows
from mxa_edge.labels import CHEXPERT_LABELS
from mxa_edge.support.errors import DatasetError

# "train" and "tune" are rows of train.csv (the carve); "valid" is valid.csv, the held-out split.
SPLITS = ("train", "tune", "valid")


@dataclass(frozen=True)
class DataSelection:
    root: str  # CheXpert root: holds train.csv / valid.csv
    uncertainty: str = "u1"  # -1.0 labels: u1 positive (the paper's U-Ones), u0 negative, ignore masked
    blank: str = "negative"  # blank labels: negative, or mask (excluded from loss and metrics)
    frontal_only: bool = True
    ap_pa: str | None = None  # keep one projection ("AP" / "PA"), or both
    fingerprint: dict = field(default_factory=dict)  # split -> dataset_fingerprint, as trained
    counts: dict = field(default_factory=dict)  # split -> number of images, as trained
    tune_fraction: float = 0.1  # ~share of train.csv's rows carved off as "tune" (whole patients); 0: none
    tune_seed: int = 0  # the carve's draw
    more_roots: tuple[str, ...] = ()  # further CheXpert roots merged with ``root`` (--data A --data B)
    # dataset name -> split -> fingerprint, for a merged selection (``fingerprint`` is the pool's)
    dataset_fingerprints: dict = field(default_factory=dict)

    def __post_init__(self):

        # A bad value fails here, at the record, not at the first read of "train".
        object.__setattr__(self, "tune_fraction", check_tune_fraction(self.tune_fraction))
        object.__setattr__(self, "tune_seed", check_tune_seed(self.tune_seed))
        object.__setattr__(self, "more_roots", tuple(str(r) for r in self.more_roots))
        self.dataset_names()  # two copies of one dataset fail here

    @property
    def roots(self) -> tuple[str, ...]:
        return (self.root, *self.more_roots)

    @property
    def merged(self) -> bool:
        return bool(self.more_roots)

    def dataset_names(self) -> dict[str, str]:
        """{name: root}: each dataset is named by its folder, or by its last two folders where two
        roots share a name (``site-a/CheXpert-v1.0-small``): what manifests and slices call it."""
        parts = [Path(r).parts for r in self.roots]
        names = [p[-1] for p in parts]
        names = [("/".join(p[-2:]) if names.count(n) > 1 else n) for n, p in zip(names, parts)]
        if len(set(names)) != len(names):
            raise DatasetError(f"{', '.join(self.roots)}: the same dataset is given twice")
        return dict(zip(names, self.roots))

    def datasets(self) -> list[DataSelection]:
        """One single-dataset selection per root, same policy (the merge's parts)."""
        return [replace(self, root=r, more_roots=(), dataset_fingerprints={}) for r in self.roots]

    def _named_parts(self):
        return [
            (name, replace(self, root=r, more_roots=(), dataset_fingerprints={}))
            for name, r in self.dataset_names().items()
        ]

    # ------------------------------------------------------------------ record

    def to_dict(self) -> dict:
        d = {
            "root": self.root,
            "uncertainty": self.uncertainty,
            "blank": self.blank,
            "frontal_only": self.frontal_only,
            "ap_pa": self.ap_pa,
            "fingerprint": dict(self.fingerprint),
            "tune_fraction": self.tune_fraction,
            "tune_seed": self.tune_seed,
        }
        d.update({f"n_{split}": n for split, n in self.counts.items()})
        if self.merged:  # absent for one dataset: records read by older versions stay as they were
            d["more_roots"] = list(self.more_roots)
            d["dataset_fingerprints"] = {k: dict(v) for k, v in self.dataset_fingerprints.items()}
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
            # Absent: the record predates the carve, so that run trained on all of train.csv.
            tune_fraction=d.get("tune_fraction", 0.0),
            tune_seed=d.get("tune_seed", 0),
            more_roots=tuple(d.get("more_roots") or ()),
            dataset_fingerprints=dict(d.get("dataset_fingerprints") or {}),
        )

    def with_root(self, root) -> DataSelection:
        """The same policy on another copy of the data (``--data DIR``): fingerprints are kept so
        a caller can tell whether the images are the ones the run saw."""

        return replace(self, root=str(find_dataset_root(root)), more_roots=(), dataset_fingerprints={})

    def checked(self) -> DataSelection:
        """The same selection with every root checked to be a CheXpert root here (DatasetError)."""
        return replace(
            self,
            root=str(find_dataset_root(self.root)),
            more_roots=tuple(str(find_dataset_root(r)) for r in self.more_roots),
        )

    @classmethod
    def for_data(cls, selection: DataSelection | None, data) -> DataSelection:
        """``--data DIR``: ``selection`` (a run's or an artifact's) on that copy of the data, or
        the default policy when the model records none. DatasetError when DIR is no CheXpert root."""
        return (selection or cls(root=str(data))).with_root(data)

    # ------------------------------------------------------------------ reading

    def read(self, split: str):
        """The split's rows (``ChexpertSplit``) after the view filters.

        ``split``: "train" (train.csv less the tuning rows), "tune" (the tuning rows of
        train.csv), "valid" (valid.csv), or a CSV path (a calibration CSV in CheXpert's layout,
        read whole). DatasetError for "tune" when this selection has no tuning split.
        """

        if self.merged:
            return concat_splits([_named(part.read(split), name) for name, part in self._named_parts()], name=split)
        if split in ("train", "tune"):
            full, rows = self._carve(split)
            return subset(full, rows, name=split)
        return read_split(Path(self.root), split, frontal_only=self.frontal_only, ap_pa=self.ap_pa)

    def targets(self, split) -> tuple:
        """(targets, mask) of a ``ChexpertSplit`` under this label policy; each row's dataset's
        never-labelled findings masked."""

        targets, mask = targets_and_mask(split.raw, self.uncertainty, blank=self.blank)
        by_name = self.dataset_names()
        if split.dataset:
            datasets = np.asarray(split.dataset)
            for name in dict.fromkeys(split.dataset):
                if name in by_name:
                    mask[np.ix_(datasets == name, self._never_labelled(by_name[name]))] = 0.0
        return targets, mask

    def never_labelled(self) -> dict[str, list[str]]:
        """{dataset name: the findings it never labels}, for logs and manifests."""
        return {
            name: [CHEXPERT_LABELS[i] for i in np.flatnonzero(self._never_labelled(r))]
            for name, r in self.dataset_names().items()
        }

    def _never_labelled(self, root: str) -> np.ndarray:
        return _never_labelled_in(root, self.frontal_only, self.ap_pa)

    def load(self, split: str, preprocess, *, limit=None, progress=None, workers: int = 2, cache=None):
        """The split decoded at ``preprocess`` (``mxa_edge.data.arrays.SplitArrays``); ``split`` as
        in ``read``. "train" and "tune" read their pixels from the cache of the whole filtered
        train.csv when it exists; without one, only their own rows are decoded. ``limit`` keeps
        the first ``limit`` rows of the split."""

        options = dict(
            uncertainty=self.uncertainty,
            blank=self.blank,
            frontal_only=self.frontal_only,
            ap_pa=self.ap_pa,
            limit=limit,
            progress=progress,
            workers=workers,
            cache=cache,
        )
        if self.merged:
            parts = [
                replace(a, split=_named(a.split, name))
                for name, part in self._named_parts()
                for a in [part.load(split, preprocess, progress=progress, workers=workers, cache=cache)]
            ]
            joined = SplitArrays(
                concat_splits([a.split for a in parts], name=parts[0].split.name),
                np.concatenate([np.asarray(a.images) for a in parts]),
                np.concatenate([a.targets for a in parts]),
                np.concatenate([a.mask for a in parts]),
            )
            return joined if limit is None else joined.head(limit)
        if split in ("train", "tune"):
            full, rows = self._carve(split)
            arrays = load_split_arrays(Path(self.root), full, preprocess, rows=rows, name=split, **options)
        else:
            arrays = load_split_arrays(Path(self.root), split, preprocess, **options)
        arrays.mask[:, self._never_labelled(self.root)] = 0.0
        return arrays

    def _carve(self, split: str):
        """(the whole filtered train.csv, the int rows of it that ``split`` holds)."""

        if split == "tune" and self.tune_fraction == 0:
            raise DatasetError(
                f"{Path(self.root) / 'train.csv'}: this run has no tuning split (tune_fraction 0: "
                "it trained on all of train.csv); tune on another run or retrain with a tuning split"
            )
        full = read_split(Path(self.root), "train", frontal_only=self.frontal_only, ap_pa=self.ap_pa)
        tune = tuning_rows(full, self.tune_fraction, self.tune_seed)
        return full, np.flatnonzero(tune if split == "tune" else ~tune)


def _named(split, name: str):
    return replace(split, dataset=[name] * len(split))


@functools.lru_cache(maxsize=16)
def _never_labelled_in(root: str, frontal_only: bool, ap_pa: str | None) -> np.ndarray:
    # Decided on the dataset's whole filtered train.csv, so train, tune and valid rows of one
    # dataset are masked alike (a finding its held-out CSV happens to fill is still not trained).
    mask = never_labelled(read_split(Path(root), "train", frontal_only=frontal_only, ap_pa=ap_pa).raw)
    mask.setflags(write=False)
    return mask
