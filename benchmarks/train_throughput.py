"""Can the data pipeline keep up with training? img/s of each stage, side by side.

    python benchmarks/train_throughput.py [--images 64] [--source-size 320] [--batch 32]
                                          [--seconds 6] [--rounds 3] [--threads N]

Measured in the same interleaved rounds (so load from other jobs hits all alike):

- decode: JPEG decode + centre crop + resize to the model's size
  (``mxa_edge.data.arrays.decode_resized``, what ``load_split_arrays`` runs once per image)
  from a phantom dataset written to a temporary folder, with 1 and 2 decoding threads, to
  128 and 224 px;
- cache read: a random batch from the memory-mapped uint8 cache that ``mxa-edge data cache``
  writes (``mxa_edge.data.cache``), what training reads when a cache exists;
- memory+augment: the per-step path of the training loop on images already decoded to
  uint8: index a batch, scale to [0, 1], ``RandAugmentGray`` (rand-m5-mstd1, 2 ops), scale
  to the model's range (as ``run_loop`` does), at 128 and 224 px;
- train step: forward, masked BCE, backward, AGC clipping and one AdamW step (timm's
  optimizer, as ``run_loop``) of M0+MXA at 128 px and M5+MXA at 224 px, batch --batch.

Prints img/s per stage and the ratio of each data stage to the train step it feeds
(> 1: the pipeline is not the bottleneck). Decoding happens once per run (images are cached
as uint8), augmentation every step; so the augment ratio is the one that must stay > 1.
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from mxa_edge.bench.timing import measure_interleaved, paired_ratio
from mxa_edge.data.arrays import decode_resized
from mxa_edge.data.chexpert import read_split
from mxa_edge.data.phantom import generate_phantom_dataset
from mxa_edge.formats.model_spec import ModelSpec
from mxa_edge.imaging.preprocess import Preprocess
from mxa_edge.support.machine import physical_cores
from mxa_edge.torch_side.models.student import build_student
from mxa_edge.torch_side.training.augment import RandAugmentGray

MODELS = {"M0@128": ("m0", 128), "M5@224": ("m5", 224)}


def decode_stage(paths, size: int, workers: int, batch: int):
    pp = Preprocess(image_size=size)
    pool = ThreadPoolExecutor(max_workers=workers)
    state = {"i": 0}

    def run():
        i = state["i"]
        chunk = [paths[(i + k) % len(paths)] for k in range(batch)]
        state["i"] = (i + batch) % len(paths)
        return list(pool.map(lambda p: decode_resized(p, pp), chunk))

    return run, pool


def cache_stage(root, size: int, batch: int, seed: int):
    from mxa_edge.data.cache import build_cache, open_cached

    pp = Preprocess(image_size=size)
    split = read_split(root, "train")
    build_cache(split, pp, base=root.parent / "cache")
    images = open_cached(split, pp, base=root.parent / "cache")
    gen = torch.Generator().manual_seed(seed)

    def run():
        idx = torch.randint(0, len(images), (batch,), generator=gen).numpy()
        return np.asarray(images[idx])

    return run


def augment_stage(size: int, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (512, size, size), dtype=np.uint8)
    aug = RandAugmentGray(num_ops=2, magnitude=5.0, magnitude_std=1.0)
    gen = torch.Generator().manual_seed(seed)

    def run():
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        x = torch.from_numpy(images[idx.numpy()]).float().div_(255.0)[:, None]
        x = aug(x, gen)
        return x * 2048.0 - 1024.0

    return run


def train_stage(variant: str, size: int, batch: int, seed: int):
    from timm.optim import create_optimizer_v2
    from timm.utils import dispatch_clip_grad

    torch.manual_seed(seed)
    model = build_student(ModelSpec(variant, size)).train()
    opt = create_optimizer_v2(model, "adamw", lr=1e-4, weight_decay=0.025)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, size, size, generator=g) * 2048 - 1024
    y = (torch.rand(batch, 14, generator=g) > 0.7).float()
    mask = torch.ones_like(y)

    def run():
        logits = model(x)
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none") * mask).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        dispatch_clip_grad(model.parameters(), value=0.02, mode="agc")
        opt.step()
        return float(loss.detach())

    return run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64, help="phantom JPEGs to decode (cycled)")
    ap.add_argument("--source-size", type=int, default=320, help="phantom JPEG side in pixels")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=6.0, help="measured seconds per stage (split over rounds)")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: physical cores)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)

    with tempfile.TemporaryDirectory(prefix="mxa-train-tput-") as tmp:
        root = generate_phantom_dataset(tmp, n_train=args.images, n_valid=0, size=args.source_size, seed=args.seed)
        paths = list(read_split(root, "train").paths)
        stages, pools = {}, []
        for name, (variant, size) in MODELS.items():
            for workers in (1, 2):
                run, pool = decode_stage(paths, size, workers, args.batch)
                stages[f"decode {size}px, {workers} thread{'s' if workers > 1 else ''}"] = run
                pools.append(pool)
            stages[f"cache read {size}px"] = cache_stage(root, size, args.batch, args.seed)
            stages[f"memory+augment {size}px"] = augment_stage(size, args.batch, args.seed)
            stages[f"train step {name}"] = train_stage(variant, size, args.batch, args.seed)
        res = measure_interleaved(stages, args.batch, args.seconds, args.warmup, args.rounds)
        for p in pools:
            p.shutdown()

    print(
        f"batch {args.batch}, torch threads {threads}, {args.images} phantom JPEGs of {args.source_size} px, "
        f"{args.seconds} s per stage in {args.rounds} interleaved rounds (medians)"
    )
    print(f"{'stage':<32}{'img/s':>10}{'ratio to the train step it feeds':>36}")
    for name, (_variant, size) in MODELS.items():
        step = res[f"train step {name}"]
        for key, m in res.items():
            if key.startswith("train step") and key != f"train step {name}":
                continue
            if f"{size}px" not in key and key != f"train step {name}":
                continue
            if m.error:
                print(f"{key:<32}{'failed: ' + m.error}")
                continue
            ratio = "" if key.startswith("train step") else f"{paired_ratio(m, step, 'img_s'):.1f}x"
            print(f"{key:<32}{m.median('img_s'):>10.1f}{ratio:>36}")
        print()


if __name__ == "__main__":
    main()
