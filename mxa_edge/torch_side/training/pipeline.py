"""``mxa-edge train``: data -> teacher -> distilled MXA student -> run folder.

1. Data: the CheXpert-layout root given, or the cached default phantom dataset; both
   splits decoded once at the training resolution (``load_split_arrays``).
2. Teacher (when KD is on; ``training/teacher.py``): TorchXRayVision DenseNet-121, either the
   published chex weights from a local file (``xrv``) or fine-tuned here on the training split
   and cached (``finetune``), optionally after pretraining on a separate, larger phantom set
   (``teacher_pretrain_images``; cached on its own). Its logits on the un-augmented training
   images are computed once and reused each epoch (``kd_online`` runs it on every augmented
   batch instead).
3. Student: EfficientViT-MultiLabel with MXA, trained with BCE + soft KD, selected (epoch and
   EMA state) on the TUNING split's macro AUC.
4. Decision rule, fitted on the tuning split: per-finding Platt calibration and operating points
   (``DecisionRule``).
5. Headline metrics on the HELD-OUT split (valid.csv), on which nothing was fitted: AUC with
   CIs, ECE before and after calibration, sensitivity/specificity at the operating points.
6. Run folder: weights (safetensors), manifest, metrics, log, curves, checkpoint.

Three roles for data, never mixed: training images (train.csv minus the tuning patients), the
tuning split (``--tune-fraction`` of train.csv's patients, carved by ``DataSelection``) and the
held-out split (valid.csv).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from mxa_edge.data.chexpert import dataset_fingerprint, find_dataset_root, subset
from mxa_edge.data.default import default_phantom_root
from mxa_edge.decision.evaluation import decision_metrics
from mxa_edge.decision.operating import parse_policy
from mxa_edge.formats import DataSelection, DecisionRule, RunRecord, naming
from mxa_edge.formats.model_spec import ModelSpec, MXAConfig
from mxa_edge.imaging.preprocess import Preprocess
from mxa_edge.support.errors import ConfigError, DatasetError
from mxa_edge.support.fileio import atomic_path
from mxa_edge.support.progress import SILENT, Reporter
from mxa_edge.torch_side.models.pretrained import load_student_weights
from mxa_edge.torch_side.models.student import build_student
from mxa_edge.torch_side.models.weights import save_weights
from mxa_edge.torch_side.training import distributed as ddp
from mxa_edge.torch_side.training.augment import parse_augment
from mxa_edge.torch_side.training.config import TrainConfig, data_roots, ema_decay_for, resolve_device
from mxa_edge.torch_side.training.loop import (
    LoopSettings,
    predict_logits,
    refresh_attention_bias_cache,
    run_loop,
    training_versions,
    tune_macro_auc,
)
from mxa_edge.torch_side.training.loss import DistillationLoss, class_balanced_pos_weight
from mxa_edge.torch_side.training.teacher import (
    TEACHER_METRICS,
    build_teacher,
    finetune_teacher,  # noqa: F401  (re-exported: where callers found it before training/teacher.py)
    held_out_macro_auc,
    make_kd_targets,
)


class _Data:
    def __init__(self, cfg: TrainConfig, reporter: Reporter):

        roots = data_roots(cfg.data)
        if not roots:
            reporter.log("no --data given: using the embedded CXR phantom dataset (generated once, then cached)")
            roots = [default_phantom_root(progress=reporter.callback("generating phantom dataset"))]
        roots = [find_dataset_root(Path(r)).resolve() for r in roots]
        self.root = roots[0]
        self.pp = Preprocess(image_size=cfg.image_size)
        selection = DataSelection(
            root=str(self.root),
            more_roots=tuple(str(r) for r in roots[1:]),
            uncertainty=cfg.uncertainty,
            blank=cfg.blank,
            frontal_only=cfg.frontal_only,
            ap_pa=cfg.ap_pa,
            tune_fraction=cfg.tune_fraction,
            # Fixed, not the training seed: the tuning split is a property of the data, so runs
            # that differ only in their seed (or an ablation) are selected and calibrated alike.
            tune_seed=0,
        )
        self.train = selection.load(
            "train",
            self.pp,
            limit=cfg.limit_train,
            progress=reporter.callback("decoding train images"),
            workers=cfg.workers,
        )
        self.tune = selection.load(
            "tune", self.pp, progress=reporter.callback("decoding tuning images"), workers=cfg.workers
        )
        self.valid = selection.load(
            "valid",
            self.pp,
            limit=cfg.limit_valid,
            progress=reporter.callback("decoding held-out images"),
            workers=cfg.workers,
        )
        if len(self.train) < cfg.batch_size:
            raise DatasetError(
                f"{self.root}: {len(self.train)} training images is fewer than one batch ({cfg.batch_size}); "
                "lower --batch-size"
            )
        self.fingerprint = {
            split: dataset_fingerprint(arrays.split)
            for split, arrays in (("train", self.train), ("tune", self.tune), ("valid", self.valid))
        }
        self.selection = replace(
            selection,
            fingerprint=self.fingerprint,
            counts={"train": len(self.train), "tune": len(self.tune), "valid": len(self.valid)},
            dataset_fingerprints=_per_dataset_fingerprints(selection, (self.train, self.tune, self.valid)),
        )
        for name, findings in selection.never_labelled().items():
            if findings:
                reporter.log(f"{name}: never labels {', '.join(findings)}: masked for its images (no loss, no metric)")


def _per_dataset_fingerprints(selection: DataSelection, arrays) -> dict:
    """{dataset name: {split: fingerprint}} of a merged selection (empty for one dataset)."""
    if not selection.merged:
        return {}
    out = {}
    for split_arrays in arrays:
        split = split_arrays.split
        names = np.asarray(split.dataset)
        for name in dict.fromkeys(split.dataset):
            rows = np.flatnonzero(names == name)
            out.setdefault(name, {})[split.name] = dataset_fingerprint(subset(split, rows))
    return out


# ---------------------------------------------------------------- student


def _spec(cfg: TrainConfig) -> ModelSpec:
    mxa = MXAConfig(placement=cfg.mxa_placement, fusion=cfg.mxa_fusion) if cfg.mxa else None
    return ModelSpec(variant=cfg.model, image_size=cfg.image_size, mxa=mxa)


def build_initial_student(cfg: TrainConfig, spec: ModelSpec):
    """(the student as training starts, what it was initialised from): the spec built under the
    run's seed, then the backbone from ``--student-weights`` when given (``models/pretrained.py``).
    ``models.weights.initial_student`` rebuilds the same model for evaluation's untrained baseline."""

    with torch.random.fork_rng():  # seeded init without leaving the global RNG changed
        torch.manual_seed(cfg.seed)
        student = build_student(spec)
    if not cfg.student_weights:
        return student, {"kind": "scratch"}

    info = load_student_weights(student, Path(cfg.student_weights))
    return student, {**info.to_dict(), "summary": info.summary()}


def _plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for task, style in (("teacher", "--"), ("student", "-")):
        rows = [r for r in history if r["task"] == task]
        if not rows:
            continue
        ep = [r["epoch"] for r in rows]
        axes[0].plot(ep, [r["loss"] for r in rows], style, marker="o", label=task)
        axes[1].plot(
            ep,
            [r["tune_macro_auc"] if r.get("tune_macro_auc") is not None else float("nan") for r in rows],
            style,
            marker="o",
            label=task,
        )
        axes[2].plot(ep, [r["lr"] for r in rows], style, label=task)
    for ax, title in zip(
        axes, ("training loss", "tuning macro AUC (selects the epoch)", "learning rate (end of epoch)")
    ):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def fit_decision(cfg: TrainConfig, data: _Data, student) -> DecisionRule:
    """Calibration and operating points of the selected student, fitted on the tuning split."""
    logits = predict_logits(student, data.tune.images, data.pp.value_range, device=cfg.device)
    return DecisionRule.fit(
        logits,
        data.tune.targets,
        data.tune.mask,
        cfg.operating_point,
        calibrate=cfg.calibrate,
        fitted_on={"split": "tune", "fingerprint": data.fingerprint["tune"], "n_images": len(data.tune)},
    )


def train(cfg: TrainConfig, reporter: Reporter = SILENT) -> dict:
    """Run the whole training job; returns the summary also written to metrics.json."""

    t_start = time.perf_counter()
    if not 0 < cfg.tune_fraction <= 0.5:
        raise ConfigError(
            f"--tune-fraction must be in (0, 0.5], got {cfg.tune_fraction}: the tuning split selects the epoch and "
            "fits calibration and thresholds, and nothing may be fitted on the held-out split instead"
        )

    parse_policy(cfg.operating_point)  # an unknown policy fails now, not after training
    cfg = replace(cfg, device=resolve_device(cfg.device))  # the run records the device it ran on
    out = Path(cfg.out)
    if (out / naming.MANIFEST).exists() and not cfg.resume:
        raise ConfigError(f"{out}: already holds a finished run; pass --resume to continue it or choose another --out")
    spec = _spec(cfg)
    # Built (and its weights file checked) before minutes of data decoding and teacher training.
    student, student_init = build_initial_student(cfg, spec)
    device = ddp.init_from_env(cfg.device)
    if device != cfg.device:  # this rank's GPU under torchrun
        cfg = replace(cfg, device=device)
    if not ddp.is_main():
        reporter = SILENT
    reporter.log(f"device: {cfg.device}")
    if student_init["kind"] == "pretrained":
        reporter.log(student_init["summary"])
    out.mkdir(parents=True, exist_ok=True)
    # Rank 0 generates the default dataset and fine-tunes (or finds) the cached teacher
    # first; the other ranks then read both from the cache.
    if ddp.is_main():
        data = _Data(cfg, reporter)
        teacher, teacher_info = build_teacher(cfg, data, reporter)
    ddp.barrier()
    if not ddp.is_main():
        data = _Data(cfg, reporter)
        teacher, teacher_info = build_teacher(cfg, data, reporter)
    kd_fn, _ = make_kd_targets(cfg, data, teacher, teacher_info, reporter)
    if teacher is not None:
        teacher_info["valid_macro_auc"] = held_out_macro_auc(cfg, data, teacher)

    pos_weight = (
        class_balanced_pos_weight(torch.from_numpy(data.train.targets), torch.from_numpy(data.train.mask))
        if cfg.class_balanced
        else None
    )
    loss = DistillationLoss(
        alpha=cfg.kd_alpha if teacher is not None else 0.0, temperature=cfg.kd_temperature, pos_weight=pos_weight
    ).to(cfg.device)
    steps = max(1, len(data.train) // cfg.batch_size) * cfg.epochs
    settings = LoopSettings(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.effective_lr(),
        min_lr=cfg.min_lr,
        weight_decay=cfg.weight_decay,
        warmup_epochs=cfg.warmup_epochs,
        agc_clip=cfg.agc_clip,
        ema_decay=ema_decay_for(steps, cfg.ema_decay) if cfg.ema else None,
        seed=cfg.seed,
        device=cfg.device,
        augment=parse_augment(cfg.augment),
        value_range=data.pp.value_range,
        task="student",
        checkpoint_every=cfg.checkpoint_every,
        amp=cfg.amp_dtype(),
        channels_last=cfg.channels_last,
        compile=cfg.compile,
    )
    log_path = out / "log.jsonl"
    if not cfg.resume and log_path.exists():
        log_path.unlink()
    result = run_loop(
        student,
        data.train.images,
        data.train.targets,
        data.train.mask,
        loss,
        lambda m: tune_macro_auc(m, data.tune, data.pp, cfg.device),
        settings,
        kd_targets=kd_fn,
        checkpoint_path=out / naming.CHECKPOINT,
        resume=cfg.resume,
        log_path=log_path,
        reporter=reporter,
    )
    if not ddp.is_main():
        ddp.barrier()
        ddp.shutdown()
        return {"run": str(out), "rank": ddp.rank()}
    student.load_state_dict(result.best_state)
    refresh_attention_bias_cache(student)
    weights_sha = save_weights(student, out / naming.WEIGHTS)

    reporter.log(f"fitting calibration and operating points ({cfg.operating_point}) on the tuning split")
    decision = fit_decision(cfg, data, student)
    reporter.log("evaluating the selected weights on the held-out split (bootstrap CIs)")
    logits = predict_logits(student, data.valid.images, data.pp.value_range, device=cfg.device)
    metrics = decision_metrics(data.valid, logits, decision, n_boot=cfg.n_boot, seed=cfg.seed)
    metrics["selected_epoch"] = result.best_epoch
    metrics["teacher"] = {k: v for k, v in teacher_info.items() if k in TEACHER_METRICS}
    metrics["train_seconds"] = time.perf_counter() - t_start
    RunRecord.save_metrics(out, metrics)
    history = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else result.history
    _plot_curves(history, out / "curves.png")

    record = RunRecord(
        model=spec,
        preprocess=data.pp,
        data=data.selection,
        weights_sha256=weights_sha,
        decision=decision,
        train_config=cfg.to_dict(),
        teacher={k: v for k, v in teacher_info.items() if k != "cache"},
        student_init={k: v for k, v in student_init.items() if k != "summary"},
        ema_decay=settings.ema_decay,
        effective_lr=settings.lr,
        numerics={"amp": settings.amp or "off", "channels_last": settings.channels_last, "compile": settings.compile},
        selected_epoch=result.best_epoch,
        distributed=(
            {"world_size": ddp.world_size(), "backend": "nccl" if cfg.device.startswith("cuda") else "gloo"}
            if ddp.world_size() > 1
            else None
        ),
        versions=training_versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    record.save(out)
    ddp.barrier()
    ddp.shutdown()
    return {"run": str(out), "metrics": metrics, "record": record}
