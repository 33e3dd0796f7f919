"""Training settings: one dataclass, recorded verbatim in the run manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from mxa_edge.support.errors import ConfigError

# The choice sets of TrainConfig's string fields that have no home elsewhere (the CLI's choices).
TEACHER_KINDS = ("finetune", "xrv", "none")  # teacher: training.pipeline.build_teacher dispatches on these
DEVICES = ("auto", "cpu", "cuda")  # device: resolve_device; "cuda:N" is also accepted (DDP ranks)
AMP_MODES = ("auto", "bf16", "off")  # amp: amp_dtype


@dataclass
class TrainConfig:
    # CheXpert-layout root, or several merged (a list: formats/selection.py says how their label
    # sets combine); None = the cached default phantom dataset
    data: str | list[str] | None = None
    out: str = "runs/default"
    model: str = "m0"
    # 112 px x 16 epochs: at the demo's fixed compute it beat 128 x 12, 160 x 8 and 224 x 4 on
    # the tuning split (benchmarks/image_size_sweep.py; README has the figures)
    image_size: int = 112
    mxa: bool = True
    mxa_placement: str = "stage"
    mxa_fusion: str = "zoom"  # zoom (the paper's) | paste (formats.model_spec.MXAConfig.fusion)
    student_weights: str | None = None  # local timm EfficientViT checkpoint to start from (never downloaded)
    kd: bool = True
    teacher: str = "finetune"  # one of TEACHER_KINDS
    teacher_weights: str | None = None
    teacher_epochs: int = 2
    teacher_lr: float = 1e-3
    # --teacher finetune: pretrain the DenseNet on this many phantoms of a separate set
    # (data.default.pretrain_phantom_root) before fine-tuning it on the run's training split,
    # so the teacher knows more than the student. 0: no pretraining. 20,000 images x 1 epoch at
    # 112 px take ~13 min on 2 CPU cores, generating the set included (once: cached), and lift the
    # teacher from 0.75 to 0.96 held-out macro AUC; too much for the ~10-minute default run,
    # hence 0 here. Stands in for pretraining on a large real corpus; with real data,
    # --teacher-weights is the real thing.
    teacher_pretrain_images: int = 0
    teacher_pretrain_epochs: int = 1
    kd_alpha: float = 0.5
    kd_temperature: float = 1.0
    kd_online: bool = False  # run the teacher on every augmented batch instead of caching its outputs
    uncertainty: str = "u1"
    blank: str = "negative"
    frontal_only: bool = True
    ap_pa: str | None = None
    # Share of train.csv's patients carved out as the tuning split: epoch/EMA and teacher
    # selection, calibration and operating points are fitted there, never on valid.csv.
    tune_fraction: float = 0.1
    calibrate: bool = True  # Platt scaling per finding, fitted on the tuning split
    operating_point: str = "youden"  # youden | f1 | sens:0.90 | spec:0.90 (mxa_edge.decision.operating)
    class_balanced: bool = False
    epochs: int = 16
    batch_size: int = 64
    lr: float = 1e-3  # at the paper's batch 512; scaled by sqrt(batch / 512) (see effective_lr)
    min_lr: float = 1e-5
    weight_decay: float = 0.025
    warmup_epochs: float = 1.0
    agc_clip: float = 0.02
    ema: bool = True
    ema_decay: float | None = None  # None: chosen from the run length (see ema_decay_for)
    augment: str = "rand-m5-mstd1"
    seed: int = 0
    device: str = "auto"  # DEVICES: auto (CUDA when available, else CPU) | cpu | cuda; train records the resolved one
    workers: int = 2  # image decoding threads
    limit_train: int | None = None
    limit_valid: int | None = None
    resume: bool = False
    checkpoint_every: int = 20  # steps between mid-epoch checkpoints (0: epoch ends only)
    amp: str = "auto"  # AMP_MODES: auto (bf16 on CUDA, off on CPU) | bf16 | off
    channels_last: bool = False
    compile: bool = False
    n_boot: int = 1000
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def amp_dtype(self) -> str | None:
        """bf16 autocast on CUDA by default; on CPU fp32 unless asked (CPU autocast is slow
        for these small depthwise-heavy models)."""
        if self.amp == "auto":
            return "bf16" if self.device.startswith("cuda") else None  # "cuda:N" under DDP
        return None if self.amp == "off" else self.amp

    def effective_lr(self) -> float:
        # Square-root scaling from the paper's 1e-3 at batch 512: linear scaling leaves
        # AdamW far too slow at the small batches a CPU or one GPU runs.
        return self.lr * (self.batch_size / 512) ** 0.5


@dataclass(frozen=True)
class Preset:
    """A named recipe: TrainConfig values that replace the defaults the user did not set."""

    values: dict
    why: str  # what was measured, and where (shown by --help and recorded in the run)


PRESETS: dict[str, Preset] = {
    # A few hundred real films on 2 CPU cores (the NIH sample: 592 training, 68 tuning images).
    # The tuning split's winner of benchmarks/real_films.py (9 recipes, one change each from
    # 128 px x 24 epochs); on the held-out split no recipe differed from another beyond its paired
    # CI, so this is a sound default, not a proven best. README "On real radiographs" has the figures.
    "small-real": Preset(
        values=dict(model="m0", image_size=128, epochs=48, class_balanced=True, kd=True, mxa=True),
        why="a few hundred real films: 128 px x 48 epochs, class-balanced loss, KD from the fine-tuned teacher "
        "(chosen on the tuning split by benchmarks/real_films.py)",
    ),
}


def with_preset(cfg: TrainConfig, name: str | None, given: set[str] = frozenset()) -> TrainConfig:
    """``cfg`` with preset ``name``'s values for every field not in ``given`` (what the user set)."""
    if name is None:
        return cfg
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    values = {k: v for k, v in PRESETS[name].values.items() if k not in given}
    return replace(cfg, **values, extra={**cfg.extra, "preset": name})


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a CUDA device, else ``cpu``; ``cuda`` without CUDA is refused."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} was asked for but CUDA is not available here; use --device cpu or auto")
    if device not in DEVICES and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; expected {', '.join(DEVICES[:-1])} or {DEVICES[-1]}")
    return device


def ema_decay_for(total_steps: int, configured: float | None) -> float:
    """The paper's 0.99996 averages over ~25k steps (50 epochs of CheXpert at batch 512);
    a short run needs a horizon of about a tenth of its length."""
    if configured is not None:
        return configured
    horizon = max(10.0, 0.1 * total_steps)
    return min(0.99996, max(0.9, 1.0 - 1.0 / horizon))


def data_roots(data: str | list[str] | None) -> list[str]:
    """``TrainConfig.data`` as a list of roots (empty: the default phantom dataset)."""
    if data is None:
        return []
    return [data] if isinstance(data, str) else [str(d) for d in data]
