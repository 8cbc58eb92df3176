"""Image loading: decoding every epoch vs reading the decoded-image cache, and loading's share.

On the same synthetic 450x450 BMP images (2,000; 300 with ``WEN_BENCH_QUICK=1``), written by
``trainers.data.synth`` into a temporary folder:

(a) decode each file, centre-crop 450 -> 300 and resize to 224 (``preprocess_image``), then
    apply the ``paper`` augmentation - what a loader without a cache does every epoch;
(b) read the same image from the ``DecodedStore`` memory map, then the same augmentation;
(c) what a trial does on a GPU (``data.augment_on: auto`` -> ``device``): read batches of 32
    from the cache and apply ``paper`` to each whole batch (``trainers.data.batch_augment``,
    Kornia), here on the CPU; on the CPU ``auto`` augments per image in the loader, as (b).

Both go through the project's own dataset class (``PreparedData.dataset``) so the figures
include its per-sample overhead (seeded augmentation). The target is (b)/(a) >= 10x; (c)/(a) is
the same comparison for the GPU default path. The pair (a), (b) is also timed without
augmentation, to show what the cache itself saves.

Loading's share of a trial's step: one training step (forward + backward + Adamax step) of
the smallest real backbone of the main study, MobileNet (timm ``mobilenetv1_100``, random
weights), at 224 px and batch 32 on the CPU, against the time the training loader
(cache + augmentation + oversampling, ``num_workers=0``) takes to produce one batch. Target:
loading <= 10% of the step.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

SIZE = 224
BATCH = 32
BACKBONE = "mobilenetv1_100"


def _images_per_second(dataset: Any, rows: list[int]) -> float:
    start = time.perf_counter()
    for k, row in enumerate(rows):
        dataset[(row, k)]
    return len(rows) / (time.perf_counter() - start)


def _step_seconds(repeats: int) -> float:
    """Median time of one forward + backward + optimizer step of the backbone."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(BACKBONE, pretrained=False, num_classes=2)
    model.train()
    optimizer = torch.optim.Adamax(model.parameters(), lr=2e-4)
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    y = torch.randint(0, 2, (BATCH,))
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if i:  # the first step allocates buffers; leave it out
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _batch_seconds(loader: Any, batches: int) -> float:
    """Median time the loader takes to hand over one batch."""
    times = []
    iterator = iter(loader)
    for _ in range(batches):
        start = time.perf_counter()
        next(iterator)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _batch_augmented_per_second(dataset: Any, rows: list[int]) -> float:
    """Images per second for cache reads stacked into batches, each batch augmented at once."""
    import torch

    from trainers.data.batch_augment import create_batch_augmentation

    augment = create_batch_augmentation("paper")
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        images = torch.stack([dataset[(row, row)][0] for row in rows[i : i + BATCH]])
        augment(images, generator)
    return len(rows) / (time.perf_counter() - start)


def run() -> list[dict[str, Any]]:
    """Time (a) decode + augment and (b) cache + augment; loading's share of a step."""
    import torch

    quick = os.environ.get("WEN_BENCH_QUICK") == "1"
    n = 300 if quick else 2000
    subjects = 4 if quick else 13
    # C-NMC layouts: ALL subjects give `cells`, hem subjects half as many, plus a final subject
    cells = math.ceil(n / (1.5 * subjects)) + 2
    with tempfile.TemporaryDirectory(prefix="wen-bench-") as tmp:
        t = _measure(Path(tmp), n, subjects, cells, quick)
    return _rows(t, n, torch.get_num_threads())


def _measure(tmp: Path, n: int, subjects: int, cells: int, quick: bool) -> dict[str, float]:
    """Every timing of the benchmark, on ``n`` synthetic 450 px C-NMC images under ``tmp``."""
    import numpy as np

    from trainers.config import CropConfig
    from trainers.data.augment import create_augmentation
    from trainers.data.cache import DecodedStore
    from trainers.data.dataset import PreparedData
    from trainers.data.layouts import read_manifest
    from trainers.data.manifest import manifest_hash
    from trainers.data.synth import synthesize

    crop = CropConfig()  # 2/3 of the shorter side: 450 -> 300
    root = synthesize(tmp / "data", "cnmc-kaggle", subjects, cells, 450, seed=0)
    frame = read_manifest(root, "cnmc-kaggle").frame
    frame = frame[frame["label"] >= 0].iloc[:n].reset_index(drop=True)
    if len(frame) < n:
        raise RuntimeError(f"synthesised {len(frame)} labelled images, wanted {n}")
    frame["split"] = "train"
    paths = frame["path"].tolist()
    rows = list(range(n))
    aug = create_augmentation("paper", SIZE)
    t: dict[str, float] = {}

    decoded = PreparedData(frame, ["hem", "all"], SIZE, crop=crop, store=None)
    for p in paths:  # read every file once so (a) is timed from the page cache, like (b)
        Path(p).read_bytes()
    t["a"] = _images_per_second(decoded.dataset(aug), rows)
    t["a_raw"] = _images_per_second(decoded.dataset(None), rows)

    start = time.perf_counter()
    store = DecodedStore.open_or_build(
        paths, [manifest_hash(frame)], crop, SIZE, tmp / "cache", progress=False
    )
    t["build"] = time.perf_counter() - start
    cached = PreparedData(frame, ["hem", "all"], SIZE, crop=crop, store=store)
    _ = np.asarray(store.array).sum()  # fault the map in once, as a second epoch would find it
    t["b"] = _images_per_second(cached.dataset(aug), rows)
    t["b_raw"] = _images_per_second(cached.dataset(None), rows)
    t["c"] = _batch_augmented_per_second(cached.dataset(None), rows)

    t["step"] = _step_seconds(repeats=2 if quick else 3)
    batches = 3 if quick else 8
    t["load_cache"] = _batch_seconds(
        cached.loader("train", train=True, batch_size=BATCH, seed=0), batches
    )
    t["load_decode"] = _batch_seconds(
        decoded.loader("train", train=True, batch_size=BATCH, seed=0), batches
    )
    return t


# long: one dict literal per row of the benchmark's table
def _rows(t: dict[str, float], n: int, threads: int) -> list[dict[str, Any]]:
    """The benchmark's table rows from the timings of :func:`_measure`."""
    a, a_raw, b, b_raw, c = t["a"], t["a_raw"], t["b"], t["b_raw"], t["c"]
    build, step, load_cache, load_decode = t["build"], t["step"], t["load_cache"], t["load_decode"]
    share_cache = 100 * load_cache / (load_cache + step)
    share_decode = 100 * load_decode / (load_decode + step)
    setting = f"{n} images 450x450 BMP, crop 300, resize {SIZE}, {threads} torch threads"
    return [
        {
            "name": "loading: decode+crop+paper aug (a)",
            "value": a,
            "unit": "img/s",
            "target": "",
            "note": setting,
        },
        {
            "name": "loading: cache read+paper aug (b)",
            "value": b,
            "unit": "img/s",
            "target": "",
            "note": "memory-mapped DecodedStore, same augmentation",
        },
        {
            "name": "loading: speed-up (b)/(a)",
            "value": b / a,
            "unit": "x",
            "target": ">= 10",
            "note": "both with the paper augmentation, which dominates (b)",
        },
        {
            "name": "loading: cache read+paper on batches (c)",
            "value": c,
            "unit": "img/s",
            "target": "",
            "note": f"batches of {BATCH}, trainers.data.batch_augment (data.augment_on: device)",
        },
        {
            "name": "loading: speed-up (c)/(a)",
            "value": c / a,
            "unit": "x",
            "target": ">= 10",
            "note": "the GPU default path against decoding and augmenting per image",
        },
        {
            "name": "loading: decode+crop only",
            "value": a_raw,
            "unit": "img/s",
            "target": "",
            "note": "no augmentation",
        },
        {
            "name": "loading: cache read only",
            "value": b_raw,
            "unit": "img/s",
            "target": "",
            "note": "no augmentation",
        },
        {
            "name": "loading: speed-up without augmentation",
            "value": b_raw / a_raw,
            "unit": "x",
            "target": ">= 10",
            "note": "what the cache itself saves",
        },
        {
            "name": "loading: cache build (once)",
            "value": build,
            "unit": "s",
            "target": "",
            "note": f"{n / build:.0f} img/s, thread pool",
        },
        {
            "name": f"step: {BACKBONE} fwd+bwd+step",
            "value": step,
            "unit": "s/batch",
            "target": "",
            "note": f"CPU, batch {BATCH}, {SIZE} px, random weights",
        },
        {
            "name": "step: loading share (cache)",
            "value": share_cache,
            "unit": "%",
            "target": "<= 10",
            "note": f"train loader batch {load_cache * 1e3:.0f} ms, num_workers=0",
        },
        {
            "name": "step: loading share (decode)",
            "value": share_decode,
            "unit": "%",
            "target": "",
            "note": f"train loader batch {load_decode * 1e3:.0f} ms, no cache",
        },
    ]
