"""The epoch loop shared by teacher fine-tuning and student training.

AdamW (timm's optimizer factory: no weight decay on norms, biases and attention biases),
warmup then cosine to ``min_lr`` per step (timm's CosineLRScheduler), adaptive gradient
clipping (timm), EMA of the weights (timm ModelEmaV3), selection on the validation split,
and a checkpoint after every epoch written atomically, so ``resume`` continues a killed run
from its last completed epoch with the same data order and augmentations (both come from
generators seeded by (seed, epoch), not from global RNG state).
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mxa_edge import __version__
from mxa_edge.data.arrays import SplitArrays
from mxa_edge.decision import scoring
from mxa_edge.decision.metrics import evaluate, sigmoid
from mxa_edge.imaging.preprocess import Preprocess
from mxa_edge.support.fileio import atomic_path
from mxa_edge.support.progress import SILENT, Reporter
from mxa_edge.torch_side.models.execution import torch_runner
from mxa_edge.torch_side.training import distributed as ddp
from mxa_edge.torch_side.training.augment import RandAugmentGray


@dataclass
class LoopSettings:
    epochs: int
    batch_size: int
    lr: float
    min_lr: float = 1e-5
    weight_decay: float = 0.025
    warmup_epochs: float = 1.0
    agc_clip: float | None = 0.02
    ema_decay: float | None = None
    seed: int = 0
    device: str = "cpu"
    augment: RandAugmentGray | None = None
    value_range: tuple[float, float] = (-1024.0, 1024.0)
    task: str = "train"
    # Mid-epoch checkpoints (steps); 0 = only at epoch ends. A SIGKILL then loses at most
    # this many steps, and the resumed run replays the same batches and augmentations.
    checkpoint_every: int = 0
    amp: str | None = None  # "bf16": autocast the forward pass (CUDA); None: full fp32
    channels_last: bool = False
    compile: bool = False


@dataclass
class LoopResult:
    best_state: dict
    best_epoch: int
    best_score: float
    history: list[dict] = field(default_factory=list)


def refresh_attention_bias_cache(model: torch.nn.Module) -> None:
    """timm's EfficientViT caches attention biases in eval mode; after weights change under
    it (EMA updates, loading a state dict) the cache is stale. A train/eval toggle clears it."""
    was_training = model.training
    model.train(True)
    model.train(was_training)


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch * 101 + stream)


def predict_logits(model, images_u8: np.ndarray, value_range, batch_size: int = 128, device: str = "cpu") -> np.ndarray:
    """Logits (N, C) for uint8 images (N, S, S), without augmentation."""
    model.eval()
    lo, hi = value_range

    def to_model_range(x: torch.Tensor) -> torch.Tensor:  # on the device: uint8 crosses the bus
        return (x.float().div(255.0) * (hi - lo) + lo)[:, None]

    runner = torch_runner(model, device=device, prepare=to_model_range, aux=False)
    out = scoring.score(runner, images_u8, batch=batch_size)
    return out.get("logits", np.zeros((0, 0), np.float32))


def run_loop(
    model: torch.nn.Module,
    train_images: np.ndarray,
    train_targets: np.ndarray,
    train_mask: np.ndarray,
    loss_fn: Callable,
    score_fn: Callable[[torch.nn.Module], float],
    settings: LoopSettings,
    *,
    kd_targets: Callable | None = None,
    checkpoint_path: Path | None = None,
    resume: bool = False,
    log_path: Path | None = None,
    reporter: Reporter = SILENT,
    on_epoch_end: Callable | None = None,
) -> LoopResult:
    """Train ``model`` in place; returns the best (EMA if enabled) state by ``score_fn``.

    ``kd_targets(index_tensor, augmented_batch) -> (teacher_logits, kd_mask)`` or None.
    ``loss_fn(logits, targets, mask, teacher_logits, kd_mask) -> dict with 'loss'``.
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler
    from timm.utils import ModelEmaV3, dispatch_clip_grad

    s = settings
    dev = torch.device(s.device)
    model.to(dev)
    if s.channels_last:
        model.to(memory_format=torch.channels_last)
    # torch.compile wraps the module; the wrapper shares parameters, so optimizer, EMA and
    # checkpoints keep working on ``model`` itself.

    world, rank = ddp.world_size(), ddp.rank()
    if s.batch_size % world:
        from mxa_edge.support.errors import ConfigError

        raise ConfigError(f"batch size {s.batch_size} must be divisible by the number of processes ({world})")
    forward = ddp.wrap(model, s.device)
    forward = torch.compile(forward) if s.compile else forward
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(s.amp or "", None)
    n = len(train_images)
    steps_per_epoch = max(1, n // s.batch_size)  # drop the last partial batch: BN needs >1 sample
    total_steps = steps_per_epoch * s.epochs
    optimizer = create_optimizer_v2(model, "adamw", lr=s.lr, weight_decay=s.weight_decay)
    warmup = int(round(s.warmup_epochs * steps_per_epoch))
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=total_steps,
        lr_min=s.min_lr,
        warmup_t=warmup,
        warmup_lr_init=s.lr * 0.01,
        t_in_epochs=False,
    )
    ema = ModelEmaV3(model, decay=s.ema_decay) if s.ema_decay else None
    history: list[dict] = []
    best = {"score": -math.inf, "epoch": -1, "state": None}
    start_epoch = 0

    start_step = 0
    resume_state = None
    if resume and checkpoint_path is not None and checkpoint_path.is_file():
        ck = torch.load(checkpoint_path, map_location=dev, weights_only=True)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if ema is not None and ck.get("ema") is not None:
            ema.module.load_state_dict(ck["ema"])
        history = list(ck.get("history", []))
        best = {"score": float(ck["best_score"]), "epoch": int(ck["best_epoch"]), "state": ck["best_state"]}
        start_epoch, start_step = int(ck["epoch"]), int(ck.get("next_step", steps_per_epoch))
        if start_step >= steps_per_epoch:  # the checkpoint closed its epoch
            start_epoch, start_step = start_epoch + 1, 0
        else:
            resume_state = ck
        reporter.log(f"resumed from {checkpoint_path}: epoch {start_epoch + 1}, step {start_step}")

    def save_checkpoint(epoch: int, next_step: int, aug_gen: torch.Generator | None, partial: dict) -> None:
        if checkpoint_path is None:
            return
        state = {
            "epoch": epoch,
            "next_step": next_step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "ema": ema.module.state_dict() if ema is not None else None,
            "history": history,
            "best_score": best["score"],
            "best_epoch": best["epoch"],
            "best_state": best["state"],
            "aug_generator": aug_gen.get_state() if aug_gen is not None else None,
            "partial": partial,
        }
        with atomic_path(checkpoint_path) as tmp:
            torch.save(state, tmp)

    targets_t = torch.from_numpy(train_targets)
    mask_t = torch.from_numpy(train_mask)
    lo, hi = s.value_range
    for epoch in range(start_epoch, s.epochs):
        model.train()
        order = torch.randperm(n, generator=_epoch_generator(s.seed, epoch, 0))
        aug_gen = _epoch_generator(s.seed, epoch, 1)
        first_step, partial = 0, {"seen": 0, "loss_sum": 0.0, "kd_sum": 0.0}
        if resume_state is not None and epoch == start_epoch:
            first_step = start_step
            aug_gen.set_state(resume_state["aug_generator"])
            partial = dict(resume_state["partial"])
        reporter.start(f"{s.task} epoch {epoch + 1}/{s.epochs}", steps_per_epoch)
        reporter.advance(f"{s.task} epoch {epoch + 1}/{s.epochs}", first_step)
        t0 = time.perf_counter()
        seen, loss_sum, kd_sum = partial["seen"], partial["loss_sum"], partial["kd_sum"]
        seen_here = 0
        for step in range(first_step, steps_per_epoch):
            # The global batch comes from the shared seeded order; this rank takes every
            # world-th row of it (all of it when not distributed).
            mine = slice(rank, None, world)
            idx = order[step * s.batch_size : (step + 1) * s.batch_size][mine]
            x = torch.from_numpy(train_images[idx.numpy()]).float().div_(255.0)[:, None]
            if s.augment is not None:
                x = s.augment(x, aug_gen, rows=mine, batch_size=s.batch_size)
            x = (x * (hi - lo) + lo).to(dev, non_blocking=True)
            if s.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            teacher_logits, kd_mask = kd_targets(idx, x) if kd_targets is not None else (None, None)
            with torch.autocast(dev.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                logits = forward(x)
            # The loss in fp32 whatever the forward precision.
            out = loss_fn(logits.float(), targets_t[idx].to(dev), mask_t[idx].to(dev), teacher_logits, kd_mask)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            if s.agc_clip:
                dispatch_clip_grad(model.parameters(), value=s.agc_clip, mode="agc")
            optimizer.step()
            global_step = epoch * steps_per_epoch + step + 1
            scheduler.step_update(global_step)
            if ema is not None:
                ema.update(model, step=global_step)
            n_global = len(idx) * world
            seen += n_global
            seen_here += n_global
            loss_sum += float(ddp.all_reduce_mean(out["loss"].detach())) * n_global
            kd_sum += float(ddp.all_reduce_mean(torch.as_tensor(out.get("kd", 0.0)))) * n_global
            lr = optimizer.param_groups[0]["lr"]
            reporter.advance(
                f"{s.task} epoch {epoch + 1}/{s.epochs}",
                1,
                loss=float(out["loss"].detach()),
                lr=lr,
                img_s=seen_here / max(time.perf_counter() - t0, 1e-9),
            )
            if s.checkpoint_every and (step + 1) % s.checkpoint_every == 0 and step + 1 < steps_per_epoch and rank == 0:
                save_checkpoint(epoch, step + 1, aug_gen, {"seen": seen, "loss_sum": loss_sum, "kd_sum": kd_sum})
        reporter.finish(f"{s.task} epoch {epoch + 1}/{s.epochs}")
        train_time = time.perf_counter() - t0

        eval_model = ema.module if ema is not None else model
        refresh_attention_bias_cache(eval_model)
        # Only rank 0 selects and saves; the other ranks skip validation.
        score = float(score_fn(eval_model)) if rank == 0 else math.nan
        record = {
            "task": s.task,
            "epoch": epoch + 1,
            "loss": loss_sum / max(seen, 1),
            "kd": kd_sum / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "img_per_s": seen_here / max(train_time, 1e-9),
            "tune_macro_auc": None if math.isnan(score) else score,
        }
        history.append(record)
        if not math.isnan(score) and score > best["score"]:
            best = {
                "score": score,
                "epoch": epoch + 1,
                "state": {k: v.detach().clone() for k, v in eval_model.state_dict().items()},
            }
        if best["state"] is None:  # no usable validation score (e.g. one class only): keep the latest
            best = {
                "score": -math.inf,
                "epoch": epoch + 1,
                "state": {k: v.detach().clone() for k, v in eval_model.state_dict().items()},
            }
        if log_path is not None and rank == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if rank == 0:
            save_checkpoint(epoch, steps_per_epoch, None, {})
        if on_epoch_end is not None:
            on_epoch_end(record, best)
        reporter.log(
            f"{s.task} epoch {epoch + 1}: loss {record['loss']:.4f}, tuning macro AUC "
            f"{'n/a' if math.isnan(score) else f'{score:.4f}'}, {record['img_per_s']:.0f} img/s"
        )
    return LoopResult(best["state"], best["epoch"], best["score"], history)


def tune_macro_auc(model, arrays: SplitArrays, pp: Preprocess, device: str) -> float:
    """Macro AUC of ``model`` on ``arrays`` (the tuning split: what epoch and teacher selection score); NaN
    when no finding has both classes."""
    logits = predict_logits(model, arrays.images, pp.value_range, device=device)
    m = evaluate(arrays.targets, sigmoid(logits), arrays.mask, n_boot=0)["macro_auc"]
    return math.nan if m is None else m


def training_versions() -> dict:
    """The library versions a run was trained with (recorded in its manifest)."""
    from importlib import metadata

    import timm

    try:
        xrv = metadata.version("torchxrayvision")
    except metadata.PackageNotFoundError:
        xrv = None
    return {
        "mxa-edge": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "torchxrayvision": xrv,
        "python": platform.python_version(),
    }
