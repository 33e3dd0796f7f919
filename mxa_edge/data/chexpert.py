"""CheXpert-v1.0 (and -small) as distributed: train.csv / valid.csv, labels and image paths.

A split keeps CheXpert's raw label values (1.0 positive, 0.0 negative, -1.0 uncertain, NaN
blank = not mentioned) so that the uncertainty policy is chosen later, in one place,
by ``targets_and_mask``. Image paths in the CSV are relative to the folder that *holds* the
dataset root (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``); the
patient of each row comes from that path (``patient_key``), so that a split carved from
train.csv (``mxa_edge.data.split``) never puts one patient on both sides.

numpy and the standard library only: no pandas, no torch.
"""

from __future__ import annotations

import csv
import enum
import hashlib
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from mxa_edge.labels import CHEXPERT_LABELS
from mxa_edge.support.errors import ConfigError, DatasetError

# CheXpert's own CSVs (root/train.csv, root/valid.csv). The tuning split is carved from
# train.csv by DataSelection; it has no CSV of its own.
SPLITS = ("train", "valid")
# Columns read_split needs. Sex and Age are read when present (OPTIONAL_COLUMNS) for the
# subgroup tables, but a CSV without them is still a dataset: they describe, never select.
REQUIRED_COLUMNS: tuple[str, ...] = ("Path", "Frontal/Lateral", "AP/PA") + CHEXPERT_LABELS
OPTIONAL_COLUMNS: tuple[str, ...] = ("Sex", "Age")
UNKNOWN_SEX = "Unknown"  # CheXpert's own spelling; also what a blank or absent Sex becomes

# CheXpert's spellings of its four label states, parsed without float() on the hot path
# (CheXpert's train.csv has 223k rows x 14 labels).
_LABEL_VALUES: dict[str, float] = {
    "": math.nan,
    "1": 1.0,
    "1.0": 1.0,
    "0": 0.0,
    "0.0": 0.0,
    "-1": -1.0,
    "-1.0": -1.0,
}
_VALID_NUMBERS = (1.0, 0.0, -1.0)
# Rows probed to decide how the CSV's paths map onto this disk (see _path_base).
_PATH_PROBE_ROWS = 64


class Uncertainty(str, enum.Enum):
    """What an uncertain (-1.0) label becomes; the CheXpert paper's U-Ones / U-Zeros / U-Ignore."""

    U1 = "u1"  # uncertain -> positive (the paper's default)
    U0 = "u0"  # uncertain -> negative
    IGNORE = "ignore"  # uncertain -> masked out of the loss and the metrics


@dataclass
class ChexpertSplit:
    """One CSV's rows after filtering; row i of every field describes the same image."""

    root: Path
    name: str
    paths: list[Path]  # absolute image paths
    raw: np.ndarray  # float32 (N, 14): 1.0 / 0.0 / -1.0, NaN for blank
    views: list[str] = field(default_factory=list)  # "Frontal" / "Lateral"
    ap_pa: list[str] = field(default_factory=list)  # "AP", "PA", "LL", ... ("" for laterals)
    rel_paths: list[str] = field(default_factory=list)  # the CSV's Path column, verbatim
    patients: list[str] = field(default_factory=list)  # patient_key(rel_path)
    sex: list[str] = field(default_factory=list)  # "Female" / "Male" / ..., "Unknown" when blank or absent
    age: list[float] = field(default_factory=list)  # years; NaN when blank, unparseable or absent
    # The dataset each row came from (its root folder's name): one name for a plain split,
    # several for a merged one (``concat_splits``), where it becomes a subgroup slice.
    dataset: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def subset(split: ChexpertSplit, rows, name: str | None = None) -> ChexpertSplit:
    """The rows ``rows`` (int indices, in that order) of ``split``, named ``name`` (default: its own).

    Every list or array field of ``ChexpertSplit`` is per-row by the class's contract, so all
    are sliced here and a field added later cannot be forgotten by one caller. A field left
    empty (a split built by hand without sex/age) stays empty.
    """
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    rows = rows.astype(np.intp, copy=False).reshape(-1)
    sliced = {}
    for f in fields(split):
        value = getattr(split, f.name)
        if isinstance(value, np.ndarray):
            sliced[f.name] = value[rows]
        elif isinstance(value, list):
            sliced[f.name] = [value[i] for i in rows] if value else []
    return replace(split, name=split.name if name is None else name, **sliced)


def patient_key(rel_path: str) -> str:
    """The patient a CSV ``Path`` belongs to: ``.../train/patient00001/study1/x.jpg`` -> ``train/patient00001``.

    CheXpert's layout is <root>/<split>/<patient>/<study>/<view file>. The key drops the root
    (the dataset folder's name, which a renamed copy changes) and the study and file, and keeps
    the split folder, so train/patient00001 and valid/patient00001 (other people in CheXpert's
    numbering) stay apart. A path with fewer than five components has no study level to
    strip: its parent folder is the key (or, for a bare file name, the file itself).
    """
    # str.split, not PurePosixPath: 4x faster over CheXpert's 223k rows, and the same parts once
    # empty and "." components are dropped.
    parts = [part for part in rel_path.split("/") if part and part != "."]
    if len(parts) >= 5:
        return "/".join(parts[1:-2])
    if len(parts) >= 2:
        return "/".join(parts[:-1])
    return rel_path


def read_split(root, split: str = "train", *, frontal_only: bool = True, ap_pa: str | None = None) -> ChexpertSplit:
    """Read root/train.csv or root/valid.csv (or any CSV with CheXpert's header) into a split.

    frontal_only keeps Frontal views; ap_pa ("AP", "PA", case-insensitive) keeps one projection.
    Raises DatasetError for a missing CSV, missing columns, unknown label values or an empty result.
    """
    root = Path(root).expanduser().absolute()
    csv_path, name = _csv_for(root, split)
    rows = _read_rows(csv_path)
    rows = _filtered(rows, csv_path, frontal_only=frontal_only, ap_pa=ap_pa)
    base = _path_base(root, [r[0] for r in rows])
    return ChexpertSplit(
        root=root,
        name=name,
        paths=[base(rel) for rel, *_ in rows],
        raw=np.array([r[3] for r in rows], dtype=np.float32).reshape(len(rows), len(CHEXPERT_LABELS)),
        views=[r[1] for r in rows],
        ap_pa=[r[2] for r in rows],
        rel_paths=[r[0] for r in rows],
        patients=[patient_key(r[0]) for r in rows],
        sex=[r[4] for r in rows],
        age=[r[5] for r in rows],
        dataset=[root.name] * len(rows),
    )


def concat_splits(splits: list[ChexpertSplit], name: str | None = None) -> ChexpertSplit:
    """Several datasets' splits as one (``--data A --data B``): rows in the given order, every
    per-row field concatenated. ``root`` is the first dataset's (paths are absolute, so nothing
    reads it for images); patient keys are prefixed with the dataset's name, because two
    datasets number their patients independently (``train/patient00001`` in both is two people).
    """
    if len(splits) == 1:
        return splits[0] if name is None else replace(splits[0], name=name)
    joined = {}
    for f in fields(ChexpertSplit):
        values = [getattr(s, f.name) for s in splits]
        if f.name == "raw":
            joined["raw"] = np.concatenate(values, axis=0)
        elif f.name == "patients":
            joined["patients"] = [
                f"{s.dataset[0] if s.dataset else i}/{p}" for i, s in enumerate(splits) for p in s.patients
            ]
        elif isinstance(values[0], list):
            # A field one split left empty (built by hand) cannot be lined up with its rows.
            joined[f.name] = (
                [v for vs in values for v in vs] if all(len(v) == len(s) for v, s in zip(values, splits)) else []
            )
    return ChexpertSplit(root=splits[0].root, name=name or splits[0].name, **joined)


def never_labelled(raw: np.ndarray) -> np.ndarray:
    """bool (14,): the findings a dataset never labels (blank on every row of ``raw``).

    Such a finding is not an observed negative: the dataset's source did not look for it (NIH's
    labels have no Fracture; a pneumonia set labels only Pneumonia and No Finding). Its rows
    are masked for that finding (no loss, no metric) whatever the blank-label policy says.
    """
    raw = np.asarray(raw, dtype=np.float32)
    return np.isnan(raw).all(axis=0) if len(raw) else np.zeros(raw.shape[1], dtype=bool)


def _csv_for(root: Path, split: str) -> tuple[Path, str]:
    if split in SPLITS:
        csv_path, name = root / f"{split}.csv", split
    else:
        csv_path = Path(split).expanduser().absolute()
        name = csv_path.stem
    if not csv_path.is_file():
        raise DatasetError(
            f"{csv_path}: CSV not found; pass the CheXpert root (the folder holding train.csv and valid.csv) "
            f"and split 'train' or 'valid', or the path of a CSV with CheXpert's header"
        )
    return csv_path, name


def _read_rows(csv_path: Path) -> list[tuple[str, str, str, list[float], str, float]]:
    """(Path, Frontal/Lateral, AP/PA, 14 label values, Sex, Age) per data row; header and values validated."""
    try:
        # utf-8-sig: a CSV re-saved by a spreadsheet starts with a byte-order mark.
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            columns = _column_indices(csv_path, header)
            width = max(i for i in columns if i is not None) + 1  # fields a row must have
            return [_parse_row(csv_path, reader.line_num, row, columns, width) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{csv_path}: cannot read the CSV ({exc})") from None


def _column_indices(csv_path: Path, header: list[str] | None) -> list[int | None]:
    """Indices of REQUIRED_COLUMNS then OPTIONAL_COLUMNS (None for an absent optional one)."""
    if not header:
        raise DatasetError(f"{csv_path}: the CSV is empty; expected CheXpert's header ({', '.join(REQUIRED_COLUMNS)})")
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DatasetError(
            f"{csv_path}: missing column(s) {', '.join(repr(c) for c in missing)}; "
            "expected CheXpert's header: Path,Sex,Age,Frontal/Lateral,AP/PA and the 14 findings"
        )
    return [header.index(c) for c in REQUIRED_COLUMNS] + [
        header.index(c) if c in header else None for c in OPTIONAL_COLUMNS
    ]


def _parse_row(
    csv_path: Path, line: int, row: list[str], columns: list[int | None], width: int
) -> tuple[str, str, str, list[float], str, float]:
    required, (sex_col, age_col) = columns[: len(REQUIRED_COLUMNS)], columns[len(REQUIRED_COLUMNS) :]
    if len(row) < width:
        raise DatasetError(f"{csv_path}, line {line}: {len(row)} fields, fewer than the header's columns")
    rel, view, proj = (row[i].strip() for i in required[:3])
    if not rel:
        raise DatasetError(f"{csv_path}, line {line}: empty Path")
    labels = [_label_value(csv_path, line, name, row[i]) for name, i in zip(CHEXPERT_LABELS, required[3:])]
    sex = _sex(row[sex_col]) if sex_col is not None else UNKNOWN_SEX
    age = _age(row[age_col]) if age_col is not None else math.nan
    return rel, view, proj, labels, sex, age


def _sex(text: str) -> str:
    # Descriptive only (subgroup tables): never an error, whatever the cell holds.
    text = text.strip()
    return UNKNOWN_SEX if not text or text.lower() == UNKNOWN_SEX.lower() else text


def _age(text: str) -> float:
    # Descriptive only, like _sex: a blank, "90+", negative or non-numeric age is unknown (NaN).
    try:
        value = float(text.strip())
    except ValueError:
        return math.nan
    return value if math.isfinite(value) and value >= 0 else math.nan


def _label_value(csv_path: Path, line: int, column: str, text: str) -> float:
    text = text.strip()
    value = _LABEL_VALUES.get(text)
    if value is not None:
        return value
    try:
        value = float(text)  # other spellings of the same numbers ("1.00")
    except ValueError:
        value = None
    if value not in _VALID_NUMBERS:
        raise DatasetError(
            f"{csv_path}, line {line}, column {column!r}: unknown label value {text!r}; "
            "CheXpert labels are 1.0, 0.0, -1.0 or blank"
        )
    return value


def _filtered(rows, csv_path: Path, *, frontal_only: bool, ap_pa: str | None):
    kept = rows
    if frontal_only:
        kept = [r for r in kept if r[1].lower() == "frontal"]
    if ap_pa is not None:
        wanted = str(ap_pa).strip().upper()
        kept = [r for r in kept if r[2].upper() == wanted]
    if not kept:
        filters = ", ".join(
            f for f in ("frontal_only" if frontal_only else "", f"ap_pa={ap_pa!r}" if ap_pa is not None else "") if f
        )
        raise DatasetError(
            f"{csv_path}: no images left ({len(rows)} rows before filtering"
            + (f"; filters: {filters}" if filters else "")
            + "); relax the filters or check the CSV"
        )
    return kept


def _path_base(root: Path, rel_paths: list[str]):
    """How the CSV's relative paths map to files on this disk, decided once per CSV.

    CheXpert's convention is root.parent / Path. When the dataset folder was renamed, the
    first component of Path no longer matches and root / Path-without-it is the file. The
    choice is made from the first rows that exist under either layout (a stat per row is slow
    on network storage with CheXpert's 223k rows); when none exist, the convention is kept.
    """

    def conventional(rel: str) -> Path:
        return root.parent / rel

    def renamed(rel: str) -> Path:
        return root.joinpath(*Path(rel).parts[1:])

    for rel in rel_paths[:_PATH_PROBE_ROWS]:
        if conventional(rel).exists():
            return conventional
        if len(Path(rel).parts) > 1 and renamed(rel).exists():
            return renamed
    return conventional


def targets_and_mask(
    raw: np.ndarray, uncertainty: Uncertainty | str = Uncertainty.U1, blank: str = "negative"
) -> tuple[np.ndarray, np.ndarray]:
    """Raw CheXpert values -> (targets, mask), both float32 (N, 14); targets are 0/1 only.

    Blank (NaN) is a negative with mask 1, or masked (mask 0) with blank="mask". Uncertain (-1)
    follows ``uncertainty``: U1 -> 1, U0 -> 0, IGNORE -> masked. A masked entry's target is 0.
    """
    policy = _uncertainty(uncertainty)
    if blank not in ("negative", "mask"):
        raise ConfigError(f"unknown blank-label policy {blank!r}; expected 'negative' or 'mask'")
    raw = np.asarray(raw, dtype=np.float32)
    is_blank = np.isnan(raw)
    is_uncertain = raw == -1.0
    if not (is_blank | is_uncertain | (raw == 0.0) | (raw == 1.0)).all():
        raise ValueError("raw labels must be 1.0, 0.0, -1.0 or NaN")

    targets = (raw == 1.0).astype(np.float32)
    mask = np.ones_like(targets)
    if policy is Uncertainty.U1:
        targets[is_uncertain] = 1.0
    elif policy is Uncertainty.IGNORE:
        mask[is_uncertain] = 0.0
    if blank == "mask":
        mask[is_blank] = 0.0
    return targets, mask


def _uncertainty(value: Uncertainty | str) -> Uncertainty:
    try:
        return Uncertainty(value.lower() if isinstance(value, str) else value)
    except ValueError:
        raise ConfigError(
            f"unknown uncertainty policy {value!r}; expected one of {', '.join(u.value for u in Uncertainty)}"
        ) from None


def dataset_fingerprint(split: ChexpertSplit) -> str:
    """First 16 hex digits of a sha256 over the sorted (Path, label row) pairs.

    A stable identity of *which images with which labels* a run used, for manifests: it does
    not depend on where the dataset sits on disk or on row order. Image bytes are not hashed
    (reading 200k+ images would take minutes), so re-encoded images with the same names and
    labels share a fingerprint.
    """
    digest = hashlib.sha256()
    digest.update(("\t".join(CHEXPERT_LABELS) + "\n").encode())
    for rel, labels in sorted(zip(split.rel_paths, (_label_text(row) for row in split.raw))):
        digest.update(f"{rel}\t{labels}\n".encode())
    return digest.hexdigest()[:16]


def _label_text(row: np.ndarray) -> str:
    # Canonical spelling so that "1" and "1.0" in the CSV give the same fingerprint.
    return ",".join("" if np.isnan(v) else str(int(v)) for v in row)


def find_dataset_root(path) -> Path:
    """A CheXpert root (holds train.csv or valid.csv), given it or its parent holding exactly one."""
    path = Path(path).expanduser().absolute()
    if not path.is_dir():
        raise DatasetError(
            f"{path}: no such folder; pass the CheXpert root (the folder holding train.csv and valid.csv)"
        )
    if _is_root(path):
        return path
    candidates = sorted(child for child in path.iterdir() if child.is_dir() and _is_root(child))
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(c.name for c in candidates)
        raise DatasetError(f"{path}: holds several CheXpert roots ({names}); pass the one to use")
    raise DatasetError(
        f"{path}: no train.csv or valid.csv here or in its subfolders; pass the CheXpert root "
        "(e.g. CheXpert-v1.0-small/, the folder holding train.csv and valid.csv)"
    )


def _is_root(folder: Path) -> bool:
    return any((folder / f"{split}.csv").is_file() for split in SPLITS)
