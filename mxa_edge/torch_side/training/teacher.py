"""The teacher of ``mxa-edge train`` (step 2 of ``training.pipeline``): the TorchXRayVision
DenseNet-121 (``models.teacher``), built the way the config asks, and the soft labels it gives
the student.

1. ``build_teacher``: none, the published chex weights from a local file (``xrv``), or
   ``finetune_teacher``: fine-tuned here on the training split (epoch selected on the tuning
   split) and cached under a key of everything that shapes it;
2. ``pretrain_teacher`` (``teacher_pretrain_images``): before fine-tuning, pretraining on a
   separate, larger phantom set, cached on its own (its identity is part of the fine-tuned
   teacher's key);
3. ``make_kd_targets``: its logits on the un-augmented training images, computed once and reused
   each epoch (``kd_online`` runs it on every augmented batch instead);
4. ``held_out_macro_auc``: its macro AUC on the held-out split, for metrics.json.

(``training.pipeline`` imports them from here; the tuning-split score, the augmentation parser and
the version record it shares with the student live in ``loop.py`` and ``augment.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mxa_edge.data.decode import decoder_identity, files_state
from mxa_edge.data.default import PRETRAIN_ROOT_NAME, PRETRAIN_SEED, pretrain_phantom_root
from mxa_edge.data.phantom import PHANTOM_VERSION
from mxa_edge.data.phantom.specs import MIN_SIZE
from mxa_edge.decision import scoring
from mxa_edge.decision.metrics import evaluate, sigmoid
from mxa_edge.formats import DataSelection
from mxa_edge.imaging.preprocess import Preprocess, unit_to_range
from mxa_edge.support.errors import ConfigError, DatasetError
from mxa_edge.support.fileio import atomic_path, read_json, sha256_file, write_json
from mxa_edge.support.paths import cache_dir
from mxa_edge.support.progress import Reporter
from mxa_edge.torch_side.models.teacher import Teacher, finetune_init
from mxa_edge.torch_side.training.augment import parse_augment
from mxa_edge.torch_side.training.config import TrainConfig
from mxa_edge.torch_side.training.loop import LoopSettings, predict_logits, run_loop, training_versions, tune_macro_auc
from mxa_edge.torch_side.training.loss import DistillationLoss

if TYPE_CHECKING:
    from mxa_edge.torch_side.training.pipeline import _Data

TEACHER_INPUT_SIZE_XRV = 224


# ---------------------------------------------------------------- shared with the student loop


# ---------------------------------------------------------------- teacher

# Share of the pretraining set's patients held back to select the pretraining epoch: the
# pretraining never looks at the run's own tuning split, so its cache serves any run.
PRETRAIN_TUNE_FRACTION = 0.05


# The teacher's record that metrics.json keeps (the manifest keeps all of it but the cache path).
TEACHER_METRICS = (
    "kind",
    "valid_macro_auc",
    "tune_macro_auc",
    "init",
    "weights",
    "pretrain_images",
    "pretrain_epochs",
    "pretrain_tune_macro_auc",
)


def _teacher_settings(cfg: TrainConfig, epochs: int, value_range, *, task: str, seed: int) -> LoopSettings:
    return LoopSettings(
        epochs=epochs,
        batch_size=cfg.batch_size,
        lr=cfg.teacher_lr,
        min_lr=cfg.min_lr,
        weight_decay=1e-4,
        warmup_epochs=min(0.5, epochs / 4),
        agc_clip=None,
        ema_decay=None,
        seed=seed,
        device=cfg.device,
        augment=parse_augment(cfg.augment),
        value_range=value_range,
        task=task,
    )


def _teacher_loss():
    loss = DistillationLoss(alpha=0.0)
    return lambda lg, t, m, tl, km: loss(lg, t, m)


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _pretrain_cache_key(cfg: TrainConfig, set_size: int, init_sha: str | None) -> str:

    key = json.dumps(
        {
            "v": 1,
            # The pretraining set is fixed by the generator and these, so a cached teacher is
            # found without generating or reading a single image.
            "set": {
                "phantom": PHANTOM_VERSION,
                "n": cfg.teacher_pretrain_images,
                "size": set_size,
                "seed": PRETRAIN_SEED,
                "root": PRETRAIN_ROOT_NAME,
            },
            "tune_fraction": PRETRAIN_TUNE_FRACTION,
            "uncertainty": cfg.uncertainty,
            "blank": cfg.blank,
            "frontal_only": cfg.frontal_only,
            "ap_pa": cfg.ap_pa,
            "size": cfg.image_size,
            "epochs": cfg.teacher_pretrain_epochs,
            "lr": cfg.teacher_lr,
            "min_lr": cfg.min_lr,
            "bs": cfg.batch_size,
            "augment": cfg.augment,
            "seed": cfg.seed,
            "device": torch.device(cfg.device).type,
            "init": init_sha,
            "decoder": decoder_identity(),
            "versions": training_versions(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def pretrain_teacher(cfg: TrainConfig, densenet, init_sha: str | None, reporter: Reporter) -> dict:
    """Pretrain ``densenet`` in place on ``cfg.teacher_pretrain_images`` phantoms of the separate
    pretraining set (``data.default.pretrain_phantom_root``), or load the cached result.

    The set is generated once at the run's resolution; its laterals are dropped as the run's are
    (``frontal_only``) and ``PRETRAIN_TUNE_FRACTION`` of its patients select the epoch. Returns
    the record (counts, tuning AUC on the pretraining carve, cache path) with ``pretrain_key``
    and ``pretrain_sha256``: the identity the fine-tuned teacher's cache key includes.
    """
    from safetensors.torch import load_file, save_file

    n, epochs = cfg.teacher_pretrain_images, cfg.teacher_pretrain_epochs
    set_size = max(cfg.image_size, MIN_SIZE)  # decoded to image_size below
    key = _pretrain_cache_key(cfg, set_size, init_sha)
    cached = cache_dir() / "teachers" / f"densenet121-pretrain-{key}.safetensors"
    meta = cached.with_suffix(".json")
    if cached.is_file():
        densenet.load_state_dict(load_file(str(cached)))
        record = read_json(meta) if meta.is_file() else {"pretrain_images": n, "pretrain_epochs": epochs}
        reporter.log(f"teacher: reusing the DenseNet-121 pretrained on {n} phantoms from {cached}")
        return {**record, "pretrain_cache": str(cached), "pretrain_key": key, "pretrain_sha256": sha256_file(cached)}
    if cfg.data is not None:
        reporter.log(
            "teacher: pretraining on phantoms before fine-tuning on --data: a stand-in for pretraining on a large "
            "real corpus (the paper's teacher saw all of CheXpert); with real data, --teacher-weights is that corpus"
        )
    root = pretrain_phantom_root(n, set_size, progress=reporter.callback(f"generating {n} pretraining phantoms"))
    selection = DataSelection(
        root=str(root),
        uncertainty=cfg.uncertainty,
        blank=cfg.blank,
        frontal_only=cfg.frontal_only,
        ap_pa=cfg.ap_pa,
        tune_fraction=PRETRAIN_TUNE_FRACTION,
        tune_seed=0,
    )
    pp = Preprocess(image_size=cfg.image_size)
    train_set = selection.load(
        "train", pp, progress=reporter.callback("decoding pretraining images"), workers=cfg.workers
    )
    tune_set = selection.load(
        "tune", pp, progress=reporter.callback("decoding pretraining tuning images"), workers=cfg.workers
    )
    if len(train_set) < cfg.batch_size:
        raise DatasetError(
            f"{root}: {len(train_set)} pretraining images is fewer than one batch ({cfg.batch_size}); "
            "raise --teacher-pretrain-images or lower --batch-size"
        )
    reporter.log(
        f"teacher: pretraining DenseNet-121 on {len(train_set)} phantoms for {epochs} epochs "
        f"(epoch selected on {len(tune_set)} more of the pretraining set)"
    )
    result = run_loop(
        densenet,
        train_set.images,
        train_set.targets,
        train_set.mask,
        _teacher_loss(),
        lambda mdl: tune_macro_auc(mdl, tune_set, pp, cfg.device),
        _teacher_settings(cfg, epochs, pp.value_range, task="teacher pretrain", seed=cfg.seed + 29),
        reporter=reporter,
    )
    densenet.load_state_dict(result.best_state)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in densenet.state_dict().items()}, str(tmp))
    record = {
        "pretrain_images": n,
        "pretrain_epochs": epochs,
        "pretrain_train_images": len(train_set),
        "pretrain_tune_images": len(tune_set),
        "pretrain_tune_macro_auc": _finite_or_none(result.best_score),
        "pretrain_set": str(root),
    }
    write_json(meta, record)
    return {**record, "pretrain_cache": str(cached), "pretrain_key": key, "pretrain_sha256": sha256_file(cached)}


def _teacher_cache_key(cfg: TrainConfig, data: _Data, init_sha: str | None, pretrain: dict | None = None) -> str:
    payload = {
        "v": 2,
        # Which images with which labels (views, projections, limits and the label policy
        # are all in the fingerprints of the splits as loaded), and the files' current state.
        "data": data.fingerprint["train"],
        "tune": data.fingerprint["tune"],  # selects the epoch
        "files": files_state(list(data.train.split.paths) + list(data.tune.split.paths)),
        "uncertainty": cfg.uncertainty,
        "blank": cfg.blank,
        # Everything the fine-tuning loop reads.
        "size": cfg.image_size,
        "epochs": cfg.teacher_epochs,
        "lr": cfg.teacher_lr,
        "min_lr": cfg.min_lr,
        "bs": cfg.batch_size,
        "augment": cfg.augment,
        "seed": cfg.seed,
        "device": torch.device(cfg.device).type,  # CPU and CUDA kernels give other numbers
        "init": init_sha,
        # And the code that decodes, builds and trains it.
        "decoder": decoder_identity(),
        "versions": training_versions(),
    }
    if pretrain is not None:  # absent without pretraining: keys of earlier caches still hold
        # What it was pretrained on and how (the key), and the very weights it starts from.
        payload["pretrain"] = {"key": pretrain["pretrain_key"], "sha256": pretrain["pretrain_sha256"]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def finetune_teacher(cfg: TrainConfig, data: _Data, reporter: Reporter):
    """Fine-tune (or load from cache) the 14-head xrv DenseNet-121; returns (Teacher, info).

    With ``cfg.teacher_pretrain_images`` > 0 it is first pretrained on that many phantoms of a
    separate set (``pretrain_teacher``, cached on its own), then fine-tuned from there."""
    from safetensors.torch import load_file, save_file

    init_path = Path(cfg.teacher_weights) if cfg.teacher_weights else None
    init_sha = sha256_file(init_path) if init_path else None
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        densenet = finetune_init(init_path)
    pretrain = pretrain_teacher(cfg, densenet, init_sha, reporter) if cfg.teacher_pretrain_images else None
    key = _teacher_cache_key(cfg, data, init_sha, pretrain)
    cached = cache_dir() / "teachers" / f"densenet121-{key}.safetensors"
    info = {
        "kind": "finetune",
        "init": str(init_path) if init_path else "scratch",
        "cache": str(cached),
        "input_size": cfg.image_size,
        "pretrain_images": 0,
        "pretrain_epochs": 0,
    }
    if pretrain is not None:
        info.update({k: v for k, v in pretrain.items() if k not in ("pretrain_key", "pretrain_sha256")})
    if cached.is_file():
        densenet.load_state_dict(load_file(str(cached)))
        meta = cached.with_suffix(".json")
        info.update(read_json(meta) if meta.is_file() else {})
        reporter.log(f"teacher: reusing fine-tuned DenseNet-121 from {cached}")
        return Teacher(densenet, "finetune"), info
    start = f"pretrained on {cfg.teacher_pretrain_images} phantoms" if pretrain else info["init"]
    reporter.log(f"teacher: fine-tuning DenseNet-121 ({start}) for {cfg.teacher_epochs} epochs")
    result = run_loop(
        densenet,
        data.train.images,
        data.train.targets,
        data.train.mask,
        _teacher_loss(),
        lambda mdl: tune_macro_auc(mdl, data.tune, data.pp, cfg.device),
        _teacher_settings(cfg, cfg.teacher_epochs, data.pp.value_range, task="teacher", seed=cfg.seed + 17),
        reporter=reporter,
    )
    densenet.load_state_dict(result.best_state)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in densenet.state_dict().items()}, str(tmp))
    info.update({"tune_macro_auc": _finite_or_none(result.best_score), "best_epoch": result.best_epoch})
    write_json(cached.with_suffix(".json"), {k: v for k, v in info.items() if k != "cache"})
    return Teacher(densenet, "finetune"), info


def build_teacher(cfg: TrainConfig, data: _Data, reporter: Reporter):
    if cfg.teacher_pretrain_images < 0 or cfg.teacher_pretrain_epochs < 1:
        raise ConfigError(
            f"--teacher-pretrain-images must be >= 0 and --teacher-pretrain-epochs >= 1, got "
            f"{cfg.teacher_pretrain_images} and {cfg.teacher_pretrain_epochs}"
        )
    if cfg.kd and cfg.teacher_pretrain_images and cfg.teacher != "finetune":
        raise ConfigError(
            f"--teacher-pretrain-images pretrains the fine-tuned teacher; --teacher {cfg.teacher} has none to "
            "pretrain: use --teacher finetune or drop --teacher-pretrain-images"
        )
    if not cfg.kd or cfg.teacher == "none":
        return None, {"kind": "none"}
    if cfg.teacher == "xrv":
        from mxa_edge.torch_side.models.teacher import load_xrv_teacher

        path = Path(cfg.teacher_weights) if cfg.teacher_weights else None
        return load_xrv_teacher(path), {
            "kind": "xrv",
            "weights": str(path) if path else "xrv cache",
            "input_size": TEACHER_INPUT_SIZE_XRV,
        }
    if cfg.teacher == "finetune":
        return finetune_teacher(cfg, data, reporter)
    raise ConfigError(f"unknown teacher {cfg.teacher!r}; expected finetune, xrv or none")


def _teacher_logits(teacher, x: torch.Tensor, input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape[-1] != input_size:
        # The published xrv weights expect 224 px (xrv resizes the same way in fix_resolution).
        x = torch.nn.functional.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
    return teacher(x)


def make_kd_targets(cfg: TrainConfig, data: _Data, teacher, info: dict, reporter: Reporter):
    if teacher is None:
        return None, None
    teacher.to(cfg.device)
    size = info.get("input_size", cfg.image_size)
    if cfg.kd_online:
        return (lambda idx, x: _teacher_logits(teacher, x, size)), None
    reporter.log("teacher: computing soft labels for the training images (once, un-augmented)")
    lo, hi = data.pp.value_range
    kd_mask = {}

    def run_batch(images_u8):
        x = unit_to_range(torch.from_numpy(images_u8).float().div_(255.0)[:, None], (lo, hi)).to(cfg.device)
        with torch.no_grad():
            logits, kd_mask["mask"] = _teacher_logits(teacher, x, size)
        return {"logits": logits.cpu().numpy()}

    out = scoring.score(run_batch, data.train.images, batch=128, progress=reporter.callback("teacher soft labels"))
    cached, kd_mask = torch.from_numpy(out["logits"]), kd_mask["mask"].cpu()
    dev = torch.device(cfg.device)
    return (lambda idx, x: (cached[idx].to(dev), kd_mask.to(dev))), cached.numpy()


def held_out_macro_auc(cfg: TrainConfig, data: _Data, teacher) -> float | None:
    """The teacher's macro AUC on the held-out split (metrics.json reports it beside the student's)."""
    teacher_probs = sigmoid(
        predict_logits(
            teacher.densenet if teacher.kind == "finetune" else _XrvAdapter(teacher),
            data.valid.images,
            data.pp.value_range,
            device=cfg.device,
        )
    )
    return evaluate(data.valid.targets, teacher_probs, data.valid.mask, n_boot=0)["macro_auc"]


class _XrvAdapter(torch.nn.Module):
    """Teacher -> plain logits module for evaluation (drops the KD mask, resizes to 224)."""

    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher

    def forward(self, x):
        return _teacher_logits(self.teacher, x, TEACHER_INPUT_SIZE_XRV)[0]
