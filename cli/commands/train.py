"""``mxa-edge train``."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

# Light modules (no torch at start-up): the choices and defaults below are the library's.
from mxa_edge.data.chexpert import Uncertainty
from mxa_edge.formats.model_spec import MXA_FUSIONS, MXA_PLACEMENTS, VARIANTS
from mxa_edge.torch_side.training.config import AMP_MODES, DEVICES, PRESETS, TEACHER_KINDS, TrainConfig, with_preset
from mxa_edge_cli.options import JsonOpt, QuietOpt, SeedOpt
from mxa_edge_cli.output import Output
from mxa_edge_cli.render import print_metrics

# Every value option's default is TrainConfig's. On/off flags are off unless given; tests/test_architecture.py
# checks that leaving each one off means the library's default.
_DEFAULTS = TrainConfig()

Variant = Enum("Variant", {v: v for v in VARIANTS}, type=str)
TeacherKind = Enum("TeacherKind", {k: k for k in TEACHER_KINDS}, type=str)
UncertaintyPolicy = Enum("UncertaintyPolicy", {u.value: u.value for u in Uncertainty}, type=str)
Device = Enum("Device", {d: d for d in DEVICES}, type=str)
Placement = Enum("Placement", {p: p for p in MXA_PLACEMENTS}, type=str)
Fusion = Enum("Fusion", {f: f for f in MXA_FUSIONS}, type=str)
PresetName = Enum("PresetName", {p: p for p in PRESETS}, type=str)
# The flags whose CLI name is not their TrainConfig field (what a preset must not override once given).
_FIELD_OF_FLAG = {
    "no_mxa": "mxa",
    "no_kd": "kd",
    "blank_mask": "blank",
    "include_lateral": "frontal_only",
    "no_calibrate": "calibrate",
    "no_ema": "ema",
    "compile_model": "compile",
}


def train(
    ctx: typer.Context,
    data: Optional[list[Path]] = typer.Option(
        None,
        "--data",
        "-d",
        help="CheXpert-layout dataset root (holds train.csv / valid.csv). Repeat to merge datasets with different "
        "label sets: each keeps its own tuning and held-out split, a finding a dataset never labels is masked for its "
        "images (not taken as negative), and the gate and report judge each dataset as a slice. "
        "Default: the embedded phantom dataset.",
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder to write. Default: runs/<date>-<time>."),
    preset: Optional[PresetName] = typer.Option(
        None,
        "--preset",
        help="A measured recipe whose settings replace the defaults of every option you do not give. "
        + "; ".join(f"{name}: {p.why}" for name, p in PRESETS.items())
        + ". Default: none (the phantom demo's recipe).",
    ),
    model: Variant = typer.Option(
        Variant(_DEFAULTS.model), "--model", "-m", help="EfficientViT-MultiLabel variant (paper Table H.1)."
    ),
    image_size: int = typer.Option(
        _DEFAULTS.image_size,
        "--image-size",
        help="Training resolution (multiple of 16; 224 is the paper's). 112 is the demo's: at its ten-minute "
        "budget it beat 128, 160 and 224 px (benchmarks/image_size_sweep.py).",
    ),
    epochs: int = typer.Option(_DEFAULTS.epochs, "--epochs", min=1, help="Student epochs."),
    batch_size: int = typer.Option(_DEFAULTS.batch_size, "--batch-size", min=2, help="Batch size."),
    lr: float = typer.Option(
        _DEFAULTS.lr, "--lr", help="Learning rate at batch 512 (the paper's 1e-3); scaled by sqrt(batch/512)."
    ),
    student_weights: Optional[Path] = typer.Option(
        None,
        "--student-weights",
        help="Start the student's backbone from a local timm EfficientViT checkpoint of the same variant "
        "(e.g. efficientvit_m0.r224_in1k's model.safetensors or pytorch_model.bin). Never downloaded. "
        "As timm does: the RGB stem is summed to one channel, the 14-finding head and the MXA blocks are new. "
        "The file's SHA-256 is recorded in the run.",
    ),
    no_mxa: bool = typer.Option(False, "--no-mxa", help="Train the paper's baseline: EfficientViT without MXA blocks."),
    mxa_placement: Placement = typer.Option(
        Placement(_DEFAULTS.mxa_placement),
        "--mxa-placement",
        help="MXA once per stage, or beside every attention block.",
    ),
    mxa_fusion: Fusion = typer.Option(
        Fusion(_DEFAULTS.mxa_fusion),
        "--mxa-fusion",
        help="zoom (the paper's): the refined ROI, resized to the whole map, is added position by position; "
        "paste: it is sampled back into the box's own positions of the map (zeros outside) before the sum.",
    ),
    no_kd: bool = typer.Option(False, "--no-kd", help="Turn knowledge distillation off (ground-truth BCE only)."),
    teacher: TeacherKind = typer.Option(
        TeacherKind(_DEFAULTS.teacher),
        "--teacher",
        help="finetune: fine-tune DenseNet-121 here (from --teacher-weights if given) and cache it; "
        "xrv: TorchXRayVision's densenet121-res224-chex weights from a local file; none: no teacher.",
    ),
    teacher_weights: Optional[Path] = typer.Option(
        None,
        "--teacher-weights",
        help="Local densenet121-res224-chex weights (.pt from TorchXRayVision, state dict or safetensors). "
        "Never downloaded.",
    ),
    teacher_epochs: int = typer.Option(
        _DEFAULTS.teacher_epochs, "--teacher-epochs", min=1, help="Teacher fine-tuning epochs (finetune only)."
    ),
    teacher_pretrain_images: int = typer.Option(
        _DEFAULTS.teacher_pretrain_images,
        "--teacher-pretrain-images",
        min=0,
        help="finetune only: first pretrain the DenseNet on N phantoms of a separate set (own seed: none of them is "
        "a training, tuning or held-out image), generated at --image-size and cached, as are the pretrained "
        "weights; then fine-tune it on the training split, so the teacher knows more than the student. "
        "Cost, once: 20000 (1 epoch) at 112 px take ~13 min on 2 CPU cores, generating the set included, and "
        "~320 MB of disk; minutes on a GPU. 0 (default) keeps the "
        "default run at ~10 min. With real --data this phantom pretraining only stands in for pretraining on "
        "a large real corpus (the paper's teacher saw all of CheXpert): use --teacher-weights there.",
    ),
    teacher_pretrain_epochs: int = typer.Option(
        _DEFAULTS.teacher_pretrain_epochs,
        "--teacher-pretrain-epochs",
        min=1,
        help="Epochs over the --teacher-pretrain-images set (each costs that many DenseNet images).",
    ),
    kd_alpha: float = typer.Option(
        _DEFAULTS.kd_alpha, "--kd-alpha", min=0.0, max=1.0, help="Weight of the distillation term (paper: 0.5)."
    ),
    kd_temperature: float = typer.Option(
        _DEFAULTS.kd_temperature, "--kd-temperature", min=0.01, help="Distillation temperature (paper: 1)."
    ),
    kd_online: bool = typer.Option(
        False, "--kd-online", help="Run the teacher on every augmented batch instead of caching its soft labels."
    ),
    uncertainty: UncertaintyPolicy = typer.Option(
        UncertaintyPolicy(_DEFAULTS.uncertainty),
        "--uncertainty",
        help="Uncertain (-1.0) labels: u1 positive (paper), u0 negative, ignore masked.",
    ),
    blank_mask: bool = typer.Option(
        False, "--mask-blank", help="Mask blank (unmentioned) labels instead of treating them as negative."
    ),
    include_lateral: bool = typer.Option(
        False, "--include-lateral", help="Keep lateral views (frontal only by default)."
    ),
    ap_pa: Optional[str] = typer.Option(None, "--ap-pa", help="Keep only AP or PA views."),
    class_balanced: bool = typer.Option(
        False, "--class-balanced", help="Class-balanced positive weights in the BCE term."
    ),
    tune_fraction: float = typer.Option(
        _DEFAULTS.tune_fraction,
        "--tune-fraction",
        min=0.01,
        max=0.5,
        help="Share of train.csv's patients held back as the tuning split (patient-level, stratified so rare "
        "findings get positives). It selects the epoch and EMA state and fits calibration and thresholds; "
        "valid.csv stays held out for the reported metrics.",
    ),
    operating_point: str = typer.Option(
        _DEFAULTS.operating_point,
        "--operating-point",
        help="How each finding's threshold is fitted on the tuning split: youden (max sensitivity + specificity; "
        "the default: no assumption about prevalence or costs), sens:0.90 (highest threshold keeping sensitivity "
        ">= 0.90: rule-out/triage), spec:0.90, or f1.",
    ),
    no_calibrate: bool = typer.Option(
        False,
        "--no-calibrate",
        help="Skip per-finding Platt calibration (probabilities are then the raw sigmoid outputs).",
    ),
    augment: str = typer.Option(
        _DEFAULTS.augment, "--augment", help="Grayscale-safe RandAugment ('rand-m<mag>-mstd<std>-n<ops>') or 'none'."
    ),
    no_ema: bool = typer.Option(
        False, "--no-ema", help="Select the raw weights instead of their exponential moving average."
    ),
    seed: int = SeedOpt,
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last checkpoint (same batches and augmentations)."
    ),
    checkpoint_every: int = typer.Option(
        _DEFAULTS.checkpoint_every,
        "--checkpoint-every",
        min=0,
        help="Steps between mid-epoch checkpoints (0: only at epoch ends).",
    ),
    amp: str = typer.Option(
        _DEFAULTS.amp, "--amp", help="Mixed precision: auto (bf16 autocast on CUDA, off on CPU), bf16, or off."
    ),
    channels_last: bool = typer.Option(
        False, "--channels-last", help="Channels-last memory format (faster convolutions on recent GPUs)."
    ),
    compile_model: bool = typer.Option(
        False, "--compile", help="torch.compile the student (first steps are slower while it compiles)."
    ),
    device: Device = typer.Option(
        Device(_DEFAULTS.device),
        "--device",
        help="auto: CUDA when torch sees a GPU, else CPU; or cpu, cuda. The run records the device it used.",
    ),
    devices: int = typer.Option(
        1,
        "--devices",
        min=1,
        help="Processes for DistributedDataParallel, started with torch's own launcher (one per GPU, NCCL, when "
        "the device is CUDA; gloo processes on CPU).",
    ),
    json_out: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Train an EfficientViT+MXA student distilled from a DenseNet-121 teacher.

    With no arguments: generates (or reuses) the embedded phantom dataset, fine-tunes the
    teacher, trains M0 at 112 px with MXA and KD (16 epochs), and prints the per-pathology AUC table
    (about 10 minutes on a 2-core CPU). The paper's setting is one flag away:
    --model m5 --image-size 224.
    """
    from mxa_edge.torch_side.training.pipeline import train as run_training

    if amp not in AMP_MODES:
        raise typer.BadParameter(f"expected {', '.join(AMP_MODES[:-1])} or {AMP_MODES[-1]}", param_hint="--amp")
    if resume and out is None:
        raise typer.BadParameter("--resume needs --out (the run folder to continue)", param_hint="--resume")
    out = out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    o = Output(json_out, quiet)
    if devices > 1:
        import os
        import sys

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise typer.BadParameter("already running under torchrun; drop --devices", param_hint="--devices")
        from mxa_edge.torch_side.training.config import resolve_device
        from mxa_edge.torch_side.training.distributed import launch

        resolved = resolve_device(device.value)  # once, here: every rank gets the same device
        _check_gpus(resolved, devices)
        argv, skip_value = [], False
        for a in sys.argv[1:]:  # drop "--devices N" and "--device X" (either spelling)
            if skip_value:
                skip_value = False
            elif a in ("--devices", "--device"):
                skip_value = True
            elif not a.startswith(("--devices=", "--device=")):
                argv.append(a)
        argv += ["--device", resolved]
        if "--out" not in argv and "-o" not in argv:
            argv += ["--out", str(out)]  # every rank must agree on the run folder
        raise typer.Exit(launch(devices, argv))
    cfg = TrainConfig(
        data=([str(d) for d in data] if len(data) > 1 else str(data[0])) if data else None,
        out=str(out),
        model=model.value,
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        mxa=not no_mxa,
        mxa_placement=mxa_placement.value,
        mxa_fusion=mxa_fusion.value,
        student_weights=str(student_weights) if student_weights else None,
        kd=not no_kd,
        teacher=teacher.value,
        teacher_weights=str(teacher_weights) if teacher_weights else None,
        teacher_epochs=teacher_epochs,
        teacher_pretrain_images=teacher_pretrain_images,
        teacher_pretrain_epochs=teacher_pretrain_epochs,
        kd_alpha=kd_alpha,
        kd_temperature=kd_temperature,
        kd_online=kd_online,
        uncertainty=uncertainty.value,
        blank="mask" if blank_mask else "negative",
        frontal_only=not include_lateral,
        ap_pa=ap_pa,
        class_balanced=class_balanced,
        tune_fraction=tune_fraction,
        operating_point=operating_point,
        calibrate=not no_calibrate,
        augment=augment,
        ema=not no_ema,
        seed=seed,
        resume=resume,
        device=device.value,
        checkpoint_every=checkpoint_every,
        amp=amp,
        channels_last=channels_last,
        compile=compile_model,
    )
    if preset is not None:
        sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
        given = {_FIELD_OF_FLAG.get(n, n) for n, src in sources.items() if src is not None and src.name != "DEFAULT"}
        cfg = with_preset(cfg, preset.value, given)
    with o.libraries():
        result = run_training(cfg, o.reporter())
    if "metrics" not in result:  # a non-zero DDP rank: rank 0 reports
        return
    metrics = result["metrics"]

    def render(console):
        print_metrics(
            console,
            metrics,
            f"Held-out metrics (valid.csv) — {result['record'].model_name} "
            f"(epoch {metrics['selected_epoch']}, selected on the tuning split)",
        )
        t = metrics.get("teacher", {})
        if t.get("valid_macro_auc") is not None:
            pretrained = (
                f", pretrained on {t['pretrain_images']} phantoms x {t['pretrain_epochs']} epochs"
                if t.get("pretrain_images")
                else ""
            )
            console.print(f"teacher ({t['kind']}{pretrained}) held-out macro AUC: {t['valid_macro_auc']:.3f}")
        record = result["record"]
        if record.student_init.get("kind") == "pretrained":
            init = record.student_init
            console.print(
                f"student initialised from {init['weights']} ({init['loaded']} tensors loaded, "
                f"{sum(init['new'].values())} new: the head and the MXA blocks)"
            )
        seconds, device_used = metrics["train_seconds"], record.train_config["device"]
        console.print(f"run folder: [bold]{result['run']}[/]  ({seconds:.0f} s on {device_used})")
        console.print(f"next: mxa-edge export {result['run']} --target openvino --int8")

    o.result({"run": result["run"], "metrics": metrics}, render)


def _check_gpus(device: str, devices: int) -> None:
    """One process per GPU: refuse more CUDA processes than GPUs before launching any."""
    if not device.startswith("cuda"):
        return
    import torch

    found = torch.cuda.device_count()
    if found < devices:
        raise typer.BadParameter(
            f"{devices} CUDA processes need {devices} GPUs; torch sees {found}. Lower --devices, "
            "or use --device cpu for gloo processes",
            param_hint="--devices",
        )
