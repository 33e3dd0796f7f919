"""``RunRecord``: a training run's manifest, typed and versioned (torch-free).

``mxa-edge train`` writes it; export, eval, bench, the report and the ablation read it, and
``mxa_edge.torch_side.models.weights.load_run`` rebuilds the student from it alone, so nothing about the
model, its preprocessing or its data can silently differ between training and export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mxa_edge.formats import naming
from mxa_edge.formats.decision import DecisionRule
from mxa_edge.formats.model_spec import ModelSpec
from mxa_edge.formats.selection import DataSelection
from mxa_edge.imaging.preprocess import Preprocess
from mxa_edge.labels import CHEXPERT_LABELS
from mxa_edge.support.errors import ArtifactError
from mxa_edge.support.fileio import read_json, write_json

# 2: the tuning split in ``data`` and the ``decision`` section (calibration + operating points)
# replace the flat ``thresholds``; version 1 runs selected and reported on one split.
RUN_FORMAT_VERSION = 2


def check_header(manifest: dict, path: Path, fmt: str, version: int, what: str) -> None:
    """Refuse a manifest of another kind, another schema version, or another label set."""
    if manifest.get("format") != fmt:
        raise ArtifactError(f"{path}: format is {manifest.get('format')!r}, not {fmt!r}; this is not {what}")
    if manifest.get("format_version") != version:
        raise ArtifactError(
            f"{path}: format_version {manifest.get('format_version')} is not supported by this version "
            f"(reads {version}); re-create it with this version of mxa-edge, or upgrade mxa-edge"
        )
    if tuple(manifest.get("labels", ())) != CHEXPERT_LABELS:
        raise ArtifactError(f"{path}: labels differ from this version's 14 CheXpert findings")


def read_manifest_json(folder: Path, missing: str) -> tuple[Path, dict]:
    path = Path(folder) / naming.MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{folder}: {missing}")
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: not a manifest (a JSON object was expected)")
    return path, manifest


@dataclass
class RunRecord:
    model: ModelSpec
    preprocess: Preprocess
    data: DataSelection
    weights_sha256: str | None = None
    decision: DecisionRule = field(default_factory=DecisionRule.uncalibrated)
    train_config: dict = field(default_factory=dict)
    teacher: dict = field(default_factory=dict)
    # Where the student's weights started: {"kind": "scratch"} (the seed alone), or the local
    # checkpoint it was initialised from with its SHA-256 and what was loaded (models/pretrained.py).
    student_init: dict = field(default_factory=lambda: {"kind": "scratch"})
    ema_decay: float | None = None
    effective_lr: float | None = None
    numerics: dict = field(default_factory=dict)  # training precision: amp, channels_last, compile
    selected_epoch: int | None = None
    distributed: dict | None = None
    versions: dict = field(default_factory=dict)
    created: str | None = None
    path: Path | None = field(default=None, compare=False)  # the folder it was loaded from

    def __post_init__(self):
        # One image size: the model's. The preprocessing record repeats it for the runtime, and
        # a disagreement would mean the model is fed another resolution than it was built for.
        if self.preprocess.image_size != self.model.image_size:
            where = self.path or "run"
            raise ArtifactError(
                f"{where}: preprocess image_size {self.preprocess.image_size} differs from the model's "
                f"{self.model.image_size}"
            )

    @property
    def labels(self) -> tuple[str, ...]:
        return CHEXPERT_LABELS

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def weights_path(self) -> Path:
        return Path(self.path) / naming.WEIGHTS

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        return {
            "format": naming.RUN_FORMAT,
            "format_version": RUN_FORMAT_VERSION,
            "labels": list(CHEXPERT_LABELS),
            "preprocess": self.preprocess.to_dict(),
            "model": self.model.to_dict(),
            "model_name": self.model_name,
            "weights": naming.WEIGHTS,
            "weights_sha256": self.weights_sha256,
            "decision": self.decision.to_dict(),
            "data": self.data.to_dict(),
            "train_config": self.train_config,
            "teacher": self.teacher,
            "student_init": self.student_init,
            "ema_decay": self.ema_decay,
            "effective_lr": self.effective_lr,
            "precision": self.numerics,
            "selected_epoch": self.selected_epoch,
            "versions": self.versions,
            "created": self.created,
            "distributed": self.distributed,
        }

    @classmethod
    def from_dict(cls, d: dict, path: Path | None = None) -> RunRecord:
        try:
            return cls(
                model=ModelSpec.from_dict(d["model"]),
                preprocess=Preprocess.from_dict(d["preprocess"]),
                data=DataSelection.from_dict(d["data"]),
                weights_sha256=d.get("weights_sha256"),
                decision=DecisionRule.from_dict(d.get("decision")),
                train_config=dict(d.get("train_config") or {}),
                teacher=dict(d.get("teacher") or {}),
                # Runs written before --student-weights existed all started from the seed alone.
                student_init=dict(d.get("student_init") or {"kind": "scratch"}),
                ema_decay=d.get("ema_decay"),
                effective_lr=d.get("effective_lr"),
                numerics=dict(d.get("precision") or {}),
                selected_epoch=d.get("selected_epoch"),
                distributed=d.get("distributed"),
                versions=dict(d.get("versions") or {}),
                created=d.get("created"),
                path=path,
            )
        except (KeyError, TypeError) as exc:
            raise ArtifactError(
                f"{path or 'run manifest'}: malformed run manifest ({type(exc).__name__}: {exc})"
            ) from None

    # ------------------------------------------------------------------ files

    @classmethod
    def load(cls, run_dir) -> RunRecord:
        run_dir = Path(run_dir)
        path, manifest = read_manifest_json(
            run_dir, f"not a training run (no {naming.MANIFEST}); point to the folder `mxa-edge train` wrote"
        )
        check_header(manifest, path, naming.RUN_FORMAT, RUN_FORMAT_VERSION, "a training run")
        return cls.from_dict(manifest, run_dir)

    def save(self, run_dir) -> None:
        self.path = Path(run_dir)
        write_json(self.path / naming.MANIFEST, self.to_dict())

    def metrics(self) -> dict | None:
        """metrics.json of the selected weights, or None when the run has none (yet)."""
        path = Path(self.path) / naming.METRICS
        return read_json(path) if path.is_file() else None

    @staticmethod
    def save_metrics(run_dir, metrics: dict) -> None:
        write_json(Path(run_dir) / naming.METRICS, metrics)
