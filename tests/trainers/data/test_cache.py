"""Pre-processing math and the decoded-image cache: reuse, invalidation, concurrency, bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainers.config import CropConfig
from trainers.data.cache import (
    CacheBuildError,
    DecodedStore,
    crop_box,
    default_cache_root,
    preprocess_image,
)

REPO = Path(__file__).resolve().parents[3]


def write_images(folder: Path, n: int, side: int = 60, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img_{i}.bmp"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


# --------------------------------------------------------------------------- pre-processing


def test_crop_450_to_300_is_the_centre(tmp_path: Path) -> None:
    assert crop_box(450, 450, CropConfig(fraction=2 / 3)) == (75, 75, 375, 375)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (450, 450, 3), dtype=np.uint8)
    path = tmp_path / "cell.bmp"
    Image.fromarray(pixels).save(path)
    out = preprocess_image(path, CropConfig(), 300)  # default fraction 2/3
    assert out.shape == (300, 300, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, pixels[75:375, 75:375])


def test_crop_fixed_size_and_non_square() -> None:
    assert crop_box(450, 450, CropConfig(fraction=None, size=224)) == (113, 113, 337, 337)
    assert crop_box(600, 450, CropConfig(fraction=2 / 3)) == (150, 75, 450, 375)
    assert crop_box(600, 450, CropConfig(fraction=None, size=None)) == (75, 0, 525, 450)
    assert crop_box(600, 450, None) == (75, 0, 525, 450)
    with pytest.raises(ValueError, match=r"data.crop.size=500 is larger than .* 450"):
        crop_box(450, 450, CropConfig(fraction=None, size=500))


def test_resize_is_antialiased_bilinear(tmp_path: Path) -> None:
    import torch
    from torchvision.transforms.v2 import functional as F

    # a fine checkerboard: without antialiasing it aliases to a pattern, with it turns grey
    board = ((np.indices((450, 450)).sum(axis=0) % 2) * 255).astype(np.uint8)
    path = tmp_path / "board.png"
    Image.fromarray(np.stack([board] * 3, axis=-1)).save(path)
    out = preprocess_image(path, CropConfig(), 100).astype(np.float32)
    assert abs(out.mean() - 127.5) < 2 and out.std() < 3
    # and it matches torchvision's bilinear antialias on the same crop
    crop = torch.from_numpy(np.stack([board] * 3)[:, 75:375, 75:375].copy())
    ref = F.resize(crop, [100, 100], antialias=True).permute(1, 2, 0).numpy().astype(np.float32)
    assert np.abs(out - ref).mean() < 2


def test_preprocess_accepts_pil_and_converts_to_rgb(tmp_path: Path) -> None:
    grey = Image.fromarray(np.full((90, 90), 77, dtype=np.uint8), mode="L")
    out = preprocess_image(grey, CropConfig(), 30)
    assert out.shape == (30, 30, 3) and (out == 77).all()


# ------------------------------------------------------------------------------------ store


def test_store_is_built_then_reused(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "img", 5)
    root = tmp_path / "cache"
    first = DecodedStore.open_or_build(paths, ["data-v1"], CropConfig(), 32, root, progress=False)
    assert first.built and len(first) == 5
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(first[i], preprocess_image(p, CropConfig(), 32))
    second = DecodedStore.open_or_build(paths, ["data-v1"], CropConfig(), 32, root)
    assert not second.built
    assert second.path == first.path
    np.testing.assert_array_equal(np.asarray(second.array), np.asarray(first.array))
    meta = json.loads(second.path.with_suffix(".json").read_text())
    assert meta["key"] == second.key and meta["rows"] == [str(p) for p in paths]
    # nothing hidden (temp files) left behind but the lock file
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == [f".{first.key}.lock"]


def test_store_invalidated_when_crop_size_or_data_change(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "img", 3)
    root = tmp_path / "cache"
    base = DecodedStore.open_or_build(paths, ["v1"], CropConfig(), 32, root, progress=False)
    crop = DecodedStore.open_or_build(
        paths, ["v1"], CropConfig(fraction=0.5), 32, root, progress=False
    )
    size = DecodedStore.open_or_build(paths, ["v1"], CropConfig(), 24, root, progress=False)
    data = DecodedStore.open_or_build(paths, ["v2"], CropConfig(), 32, root, progress=False)
    assert crop.built and size.built and data.built
    assert len({base.path, crop.path, size.path, data.path}) == 4
    assert not np.array_equal(np.asarray(base.array), np.asarray(crop.array))


def test_store_pickles_as_a_path(tmp_path: Path) -> None:
    import pickle

    paths = write_images(tmp_path / "img", 2)
    store = DecodedStore.open_or_build(
        paths, ["p"], CropConfig(), 16, tmp_path / "c", progress=False
    )
    _ = store[0]
    blob = pickle.dumps(store)
    assert len(blob) < 2000  # the map is not copied into the pickle
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again[1], store[1])


def test_default_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WEN_CACHE_DIR", str(tmp_path))
    assert default_cache_root() == tmp_path / "decoded"
    monkeypatch.delenv("WEN_CACHE_DIR")
    assert default_cache_root() == Path.home() / ".cache" / "wen-search" / "decoded"


def test_bad_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "img", 3)
    bad = tmp_path / "img" / "broken.bmp"
    bad.write_bytes(b"BM not really an image")
    root = tmp_path / "cache"
    with pytest.raises(CacheBuildError) as info:
        DecodedStore.open_or_build([*paths, bad], ["bad"], CropConfig(), 16, root, progress=False)
    msg = str(info.value)
    assert str(bad) in msg and "wen data check" in msg and "data.skip_bad_files" in msg
    # no half-built store and no temp file is left
    assert not list(root.glob("*.npy")) and not list(root.glob(".*.tmp*"))


_CHILD = textwrap.dedent(
    """
    import sys, time, json
    from pathlib import Path
    import trainers.data.cache as cache
    from trainers.config import CropConfig

    real = cache.preprocess_image
    def slow(path, crop, size):
        time.sleep(0.05)  # a slow build, so the second process arrives while it runs
        return real(path, crop, size)
    cache.preprocess_image = slow
    paths = json.loads(sys.argv[1])
    # both processes start together
    while not Path(sys.argv[3]).exists():
        time.sleep(0.01)
    store = cache.DecodedStore.open_or_build(paths, ["shared"], CropConfig(), 24,
                                             Path(sys.argv[2]), workers=1, progress=False)
    print(json.dumps({"built": store.built, "sum": int(store.array.sum())}))
    """
)


def test_concurrent_open_builds_once(tmp_path: Path) -> None:
    paths = [str(p) for p in write_images(tmp_path / "img", 20)]
    root = tmp_path / "cache"
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(paths), str(root), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["built"] for r in results) == [False, True]
    assert results[0]["sum"] == results[1]["sum"]
    assert len(list(root.glob("*.npy"))) == 1
    assert not list(root.glob(".*.tmp*"))
