"""Predict the 14 CheXpert findings on radiograph files with an exported artifact (no torch).

    from mxa_edge.runtime.predict import Predictor

    predictor = Predictor("runs/m0/exports/openvino-int8")
    for item in predictor.predict_files(["a.png", "b.dcm"]):
        if isinstance(item, PredictionError):
            print(item.file, item.problem)
        else:
            print(item.file, item.positives, item.roi_boxes)

The flow per image: ``load_radiograph`` (PNG / JPEG / single-frame DICOM -> gray [0, 1]) ->
the artifact's own ``Preprocess`` (centre square crop, resize, [-1024, 1024]) -> batch ->
engine (ONNX Runtime or OpenVINO, chosen by the manifest) -> logits -> the manifest's
``DecisionRule``: per finding a calibrated probability (Platt scaling fitted on the run's
tuning split) and a positive/negative decision at that finding's own threshold (set by the
run's operating-point policy, e.g. Youden's J, on the tuning split). Never a flat 0.5.
The MXA ROI boxes (one per MXA block, the last from the deepest) and the spatial attention
map's box come out of the model in the centre-crop frame and are mapped back to pixel
coordinates of the ORIGINAL image with ``Preprocess.box_to_image``.

Preprocessing is read from the artifact's manifest only: nothing here can make inference
differ from what the model was trained and drift-checked with. The artifact's hashes are
verified before the model is loaded (``load_artifact``).

Inputs out of scope: the model was trained on frontal (PA/AP) chest radiographs. DICOM files
are triaged by their header first (``mxa_edge.imaging.dicom``: modality, body part, view position;
skipped files are reported with the reason, never silently dropped) and grouped by study and
series. Every predicted image is then scored by the artifact's input guard
(``mxa_edge.decision.guard``): ``in_distribution`` is False when its features and image statistics lie farther from the
training images' than the threshold, e.g. a lateral view without a ViewPosition tag, an
inverted film, a non-chest image. With ``strict_inputs`` such an image is an error instead.

Only numpy, Pillow, pydicom (for DICOM files) and the engine's runtime are imported here.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from mxa_edge.decision.guard import FEATURES_OUTPUT, load_guard
from mxa_edge.formats import load_artifact
from mxa_edge.imaging.dicom import is_dicom_file, read_header, skip_reason
from mxa_edge.imaging.imageio import SUPPORTED_SUFFIXES, irregular_file_problem, is_supported_image, load_radiograph
from mxa_edge.runtime.engines import open_engine
from mxa_edge.runtime.overlay import downscale
from mxa_edge.runtime.verify import ensure_verified
from mxa_edge.support.errors import InputImageError

STATUS_PREDICTED, STATUS_SKIPPED, STATUS_ERROR = "predicted", "skipped", "error"

_GLOB_CHARS = frozenset("*?[")


@dataclass
class PredictionResult:
    """The model's answer for one image. Boxes are [x1, y1, x2, y2] in original image pixels."""

    file: str
    width: int
    height: int
    model_id: str
    probabilities: dict[str, float]  # label -> calibrated probability, in the artifact's label order
    thresholds: dict[str, float]  # label -> threshold (on the calibrated probability) of its decision
    positives: list[str]  # labels at or above their threshold, most probable first
    roi_boxes: list[list[float]]  # one per MXA block, shallow to deep (last = deepest); [] without MXA
    policies: dict[str, str] = field(default_factory=dict)  # label -> what set its threshold
    in_distribution: bool | None = None  # the input guard's verdict (None: artifact without a guard)
    ood_score: float | None = None  # the guard's score (~1 for a typical training image); flagged above ood_threshold
    ood_threshold: float | None = None
    dicom: dict | None = None  # UIDs, Modality, BodyPartExamined, ViewPosition, frame used (DICOM inputs)
    attention_box: list[float] | None = None  # the frame of ``attention`` in image pixels
    attention: np.ndarray | None = field(default=None, repr=False)  # (h, w) spatial attention map
    # The gray image when kept (``keep_image``): a copy downscaled to a long side of at most
    # overlay.MAX_SIDE, so its shape may be smaller than (height, width); boxes stay in original pixels.
    image: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-ready summary (no arrays): per finding the calibrated ``probability``, the
        ``positive`` decision, its ``threshold`` and the ``policy`` that set it."""
        return {
            "file": self.file,
            "status": STATUS_PREDICTED,
            "model_id": self.model_id,
            "in_distribution": self.in_distribution,
            "ood_score": self.ood_score,
            "ood_threshold": self.ood_threshold,
            "dicom": self.dicom,
            "width": self.width,
            "height": self.height,
            "findings": {
                label: {
                    "probability": p,
                    "positive": label in self.positives,
                    "threshold": self.thresholds[label],
                    "policy": self.policies.get(label),
                }
                for label, p in self.probabilities.items()
            },
            "positives": list(self.positives),
            "roi_boxes": [list(b) for b in self.roi_boxes],
            "attention_box": list(self.attention_box) if self.attention_box is not None else None,
        }

    def ranked(self) -> list[tuple[str, float]]:
        """(label, probability), most probable first."""
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])


@dataclass
class PredictionError:
    """An input that could not be predicted, with a one-line reason a person can act on."""

    file: str
    problem: str
    dicom: dict | None = None

    def to_dict(self) -> dict:
        return {"file": self.file, "status": STATUS_ERROR, "error": self.problem, "dicom": self.dicom}


@dataclass
class PredictionSkipped:
    """An input deliberately not predicted (a lateral view, a CT slice, a hand radiograph...)."""

    file: str
    reason: str
    dicom: dict | None = None

    def to_dict(self) -> dict:
        return {"file": self.file, "status": STATUS_SKIPPED, "reason": self.reason, "dicom": self.dicom}


@dataclass
class _Prepared:
    """A decoded image between decoding and its batch: only what the batch needs is kept."""

    item: PlannedInput
    tensor: np.ndarray  # the artifact's Preprocess output (channels, S, S) float32
    height: int  # of the original image
    width: int
    image: np.ndarray | None = None  # downscaled gray copy, when kept for an overlay


@dataclass
class PlannedInput:
    """One input file after its DICOM header (if any) was read: what to do with it."""

    path: Path
    frame: int | None = None  # the frame to read from a multi-frame DICOM
    dicom: dict | None = None
    skip: str | None = None  # why it is not predicted
    error: str | None = None  # why it cannot be read


def plan_inputs(paths: Iterable) -> list[PlannedInput]:
    """Read the DICOM headers (not the pixels) of ``paths``, decide what is skipped and why
    (``mxa_edge.imaging.dicom.skip_reason``), and order DICOM files by study, series and instance
    number (each study where its first file was; other files keep their place).

    A path that is not a regular file (a FIFO, socket, device or directory) is an error here,
    before anything opens it: opening a FIFO would block until something writes to it."""

    planned: list[PlannedInput] = []
    keys = []
    first_study: dict[str, int] = {}
    first_series: dict[tuple, int] = {}
    for i, path in enumerate(Path(p) for p in paths):
        key = (i, 0, 0, i)
        irregular = irregular_file_problem(path)
        if irregular is not None:
            planned.append(PlannedInput(path, error=irregular))
        elif not is_dicom_file(path) or not path.is_file():
            planned.append(PlannedInput(path))
        else:
            try:
                header = read_header(path)
            except InputImageError as exc:
                planned.append(PlannedInput(path, error=exc.problem))
            else:
                frame = 0 if header.n_frames > 1 else None
                info = {**header.to_dict(), "frame": 0 if frame is not None else None}
                planned.append(PlannedInput(path, frame, info, skip=skip_reason(header)))
                study = header.study_uid or f"<no study {i}>"
                s_pos = first_study.setdefault(study, i)
                r_pos = first_series.setdefault((study, header.series_uid), i)
                key = (s_pos, r_pos, header.instance_number if header.instance_number is not None else 0, i)
        keys.append(key)
    order = sorted(range(len(planned)), key=lambda j: keys[j])
    return [planned[j] for j in order]


# --- inputs ----------------------------------------------------------------------------------


def expand_inputs(specs: Iterable) -> tuple[list[Path], list[str]]:
    """Files, folders and glob patterns -> (image files in order, specs that matched nothing).

    A named file is kept whatever its suffix (a bad file then fails with its own message); a
    name that does not exist is kept too, so it is reported as "file not found". Folders are
    searched recursively and globs expanded (``**`` allowed); from those, only files with a
    supported suffix (.png, .jpg, .jpeg, .dcm, .dicom) are taken, sorted. Duplicates are
    dropped, the first occurrence kept. Raises InputImageError when nothing at all is found.
    """
    specs = [str(s) for s in specs]
    files: list[Path] = []
    empty: list[str] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = _images_under(path)
        elif path.exists() or not (_GLOB_CHARS & set(spec)):
            found = [path]
        else:
            found = []
            for match in sorted(glob.glob(os.path.expanduser(spec), recursive=True)):
                m = Path(match)
                if m.is_dir():
                    found.extend(_images_under(m))
                elif m.is_file() and is_supported_image(m):
                    found.append(m)
        if not found:
            empty.append(spec)
        files.extend(found)
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.absolute()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if not unique:
        raise InputImageError(
            ", ".join(specs) or "(no inputs)",
            f"no images found (looked for {', '.join(SUPPORTED_SUFFIXES)} files); check the paths or patterns",
        )
    return unique, empty


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_supported_image(p))


# --- model ------------------------------------------------------------------------------------


class Predictor:
    """An exported artifact, verified and loaded once, applied to image files.

    ``threads``: inference threads (default: all cores). Raises ArtifactError for a missing,
    incomplete or tampered artifact, MissingDependencyError when its runtime is absent, and
    VerificationError when ``verify`` and this machine does not reproduce the gated outputs.
    """

    def __init__(
        self,
        artifact_path,
        threads: int | None = None,
        *,
        verify: bool = True,
        allow_rejected: bool = False,
        trust=None,
    ):

        # Hashes, signature (``trust``) and the gate's verdict are checked before anything loads.
        self.artifact = load_artifact(artifact_path, allow_rejected=allow_rejected, trust=trust)
        self.preprocess = self.artifact.preprocess
        self.labels = self.artifact.labels
        self.decision = self.artifact.decision
        self.thresholds = self.artifact.thresholds
        self.policies = {label: self.decision.label_policy(label) for label in self.labels}
        self.model_id = self.artifact.manifest.model_id
        self.guard = load_guard(self.artifact)
        self.engine = open_engine(self.artifact, threads)
        # First use on this machine: the golden vectors must reproduce (VerificationError if not).
        self.verification = ensure_verified(self.artifact, self.engine) if verify else None

    def predict_files(
        self, paths: Iterable, batch_size: int = 8, *, keep_image: bool = False, strict_inputs: bool = False
    ) -> Iterator[PredictionResult | PredictionError | PredictionSkipped]:
        """One PredictionResult, PredictionSkipped or PredictionError per path; DICOM files
        grouped by study and series (``plan_inputs``), the other files in the order given.

        Images are decoded one at a time and run ``batch_size`` at a time; a file that cannot
        be read yields a PredictionError and the others go on. ``keep_image`` keeps a gray copy
        of each image on its result for overlays, downscaled to a long side of at most
        ``overlay.MAX_SIDE`` (1024) px (``render_overlay`` maps the boxes, which stay in original
        pixels, with the result's width and height). ``strict_inputs``: an image the input guard
        flags becomes a PredictionError (its probabilities are not given out).

        Memory is bounded per image, not per batch: each image is reduced to the artifact's
        model-size input tensor right after it is decoded, and only that tensor, its original
        (height, width) and the small kept copy wait for the batch. The peak above the loaded
        model is one image's decode and preprocessing, about 8 bytes per pixel of the largest
        PNG/JPEG (the float32 image, 4, and Pillow's float32 copy of it inside ``Preprocess``,
        4; 12 for a landscape image, whose centre crop ``Preprocess`` copies first; decoding
        alone peaks at 6: see ``load_radiograph``; a DICOM with a rescale and a window up to
        about 28), plus one batch of model-size tensors (``batch_size`` x 4 bytes
        x the model's input pixels) and the engine's activations; never ``batch_size``
        full-size images. Measured: eight 8900 x 8900 16-bit PNGs, 0.7 GB (3.8 GB when the
        batch's decoded images were all kept).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        pending: list = []
        n_images = 0
        for item in plan_inputs(paths):
            if item.error is not None:
                pending.append(PredictionError(str(item.path), item.error, item.dicom))
                continue
            if item.skip is not None:
                pending.append(PredictionSkipped(str(item.path), item.skip, item.dicom))
                continue
            try:
                pending.append(self._prepare(item, keep_image))
            except InputImageError as exc:
                pending.append(PredictionError(str(item.path), exc.problem, item.dicom))
                continue
            n_images += 1
            if n_images == batch_size:
                yield from self._flush(pending, strict_inputs)
                pending, n_images = [], 0
        yield from self._flush(pending, strict_inputs)

    def predict_arrays(self, images: list[np.ndarray], names: list[str] | None = None) -> list[PredictionResult]:
        """Predict gray float images (H, W) in [0, 1], as ``load_radiograph`` returns them."""
        names = names or [f"<array {i}>" for i in range(len(images))]
        return self._run(
            [_Prepared(PlannedInput(Path(n)), self.preprocess(g), *g.shape) for n, g in zip(names, images)]
        )

    def _prepare(self, item: PlannedInput, keep_image: bool) -> _Prepared:
        """Decode one file and reduce it to what its batch needs; the full image is dropped on return."""

        gray = load_radiograph(item.path, frame=item.frame)
        height, width = gray.shape
        tensor = self.preprocess(gray)
        return _Prepared(item, tensor, height, width, downscale(gray) if keep_image else None)

    def _flush(self, pending, strict_inputs: bool) -> Iterator:
        loaded = [p for p in pending if isinstance(p, _Prepared)]
        results = iter(self._run(loaded) if loaded else [])
        for item in pending:
            if not isinstance(item, _Prepared):
                yield item
                continue
            result = next(results)
            if strict_inputs and result.in_distribution is False:
                yield PredictionError(
                    result.file,
                    f"not like the images the model was trained on (input-guard score {result.ood_score:.2f} > "
                    f"threshold {result.ood_threshold:.2f}); not predicted (--strict-inputs)",
                    result.dicom,
                )
            else:
                yield result

    def _run(self, prepared: list[_Prepared]) -> list[PredictionResult]:

        batch = np.stack([p.tensor for p in prepared]).astype(np.float32, copy=False)
        out = self.engine.run(batch)
        probs = self.decision.probabilities(out["logits"])
        positive = self.decision.decisions(probs)
        roi = out.get("roi")
        att, att_box = out.get("attention"), out.get("attention_box")
        ood = self.guard.score(out[FEATURES_OUTPUT], batch) if self.guard is not None else None
        results = []
        for i, prep in enumerate(prepared):
            item, h, w = prep.item, prep.height, prep.width
            p = {label: float(probs[i, j]) for j, label in enumerate(self.labels)}
            flagged = {label for j, label in enumerate(self.labels) if positive[i, j]}
            positives = [k for k, _ in sorted(p.items(), key=lambda kv: -kv[1]) if k in flagged]
            boxes = self._to_pixels(roi[i], h, w) if roi is not None else []
            a_box = self._to_pixels(att_box[i][None], h, w)[0] if att_box is not None else None
            results.append(
                PredictionResult(
                    file=str(item.path),
                    width=int(w),
                    height=int(h),
                    model_id=self.model_id,
                    probabilities=p,
                    thresholds=dict(self.thresholds),
                    positives=positives,
                    policies=dict(self.policies),
                    in_distribution=None if ood is None else bool(ood[i] <= self.guard.threshold),
                    ood_score=None if ood is None else round(float(ood[i]), 4),
                    ood_threshold=None if ood is None else round(float(self.guard.threshold), 4),
                    dicom=item.dicom,
                    roi_boxes=boxes,
                    attention_box=a_box,
                    attention=np.asarray(att[i, 0], dtype=np.float32) if att is not None else None,
                    image=prep.image,
                )
            )
        return results

    def _to_pixels(self, boxes: np.ndarray, h: int, w: int) -> list[list[float]]:
        """Normalized crop-frame boxes (K, 4) -> image pixels, ordered corners, inside the image."""
        b = np.clip(np.asarray(boxes, dtype=np.float64), 0.0, 1.0)
        b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1)
        px = self.preprocess.box_to_image(b, h, w)
        px[:, [0, 2]] = np.clip(px[:, [0, 2]], 0.0, w)
        px[:, [1, 3]] = np.clip(px[:, [1, 3]], 0.0, h)
        return [[round(float(v), 2) for v in row] for row in px]
