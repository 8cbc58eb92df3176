"""``wen predict MODEL_DIR PATH...``: class probabilities of images from an exported ensemble.

Each image is pre-processed by ``trainers.data.cache.preprocess_image`` with the manifest's
crop and size (exactly what training did), scaled to [0, 1] and run through ``ensemble.onnx``
on onnxruntime (default) or the eager PyTorch ensemble rebuilt from the members' safetensors
(``backend="torch"``). An image that cannot be read (not an image, truncated, a decompression
bomb) gets a row with its error instead of probabilities; the others are unaffected.

>>> from ensemble.predict import predict_images
>>> table = predict_images("runs/demo/model", ["cells/"])        # doctest: +SKIP
>>> list(table.columns)                                          # doctest: +SKIP
['path', 'prob_hem', 'prob_all', 'predicted', 'error']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble.export import (
    INPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    load_ensemble_module,
    onnx_session,
    read_manifest,
)
from trainers.errors import WenError

__all__ = ["BACKENDS", "PredictInputError", "find_images", "predict_images", "prob_column"]

BACKENDS = ("onnx", "torch")


class PredictInputError(WenError, ValueError):
    """Paths given to predict that hold no images or do not exist."""


def prob_column(class_name: str) -> str:
    """The output column holding ``class_name``'s probability."""
    return f"prob_{class_name}"


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given (any extension: a non-image is reported when read), folders searched
    recursively for image files (``trainers.data.layouts.IMAGE_EXTENSIONS``), in sorted order."""
    from trainers.data.layouts import IMAGE_EXTENSIONS

    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            inside = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not inside:
                raise PredictInputError(
                    f"folder {p} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); pass "
                    "image files or a folder of them"
                )
            found.extend(inside)
        else:
            raise PredictInputError(f"{p} does not exist; pass image files or folders of images")
    return list(dict.fromkeys(found))


def _read(path: Path, crop: Any, size: int) -> tuple[np.ndarray | None, str | None]:
    """The pre-processed uint8 image, or the reason it cannot be read (naming the file)."""
    from PIL import Image

    from trainers.data.cache import preprocess_image

    try:
        return preprocess_image(path, crop, size), None
    except Image.DecompressionBombError as exc:
        return None, (
            f"{path}: decompression bomb refused by PIL ({exc}); images over "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels are never decoded"
        )
    except (OSError, SyntaxError, ValueError) as exc:  # UnidentifiedImageError is an OSError
        return None, f"{path}: not a readable image ({type(exc).__name__}: {exc})"


def _runner(
    model_dir: Path, manifest: dict[str, Any], backend: str
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a float32 [n, 3, S, S] batch to [n, k] probabilities."""
    if backend == "onnx":
        session = onnx_session(model_dir / ONNX_FILE)
        return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    import torch

    module = load_ensemble_module(model_dir, manifest)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run


def predict_images(
    model_dir: str | Path,
    paths: Sequence[str | Path],
    backend: str = "onnx",
    *,
    batch_size: int = 32,
    skip_bad: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per image: ``path``, ``prob_<class>`` for each class, ``predicted``, ``error``.

    ``paths`` are image files or folders (searched recursively). A file that cannot be read
    keeps its row with empty probabilities and the reason in ``error`` (``skip_bad`` leaves
    such rows out). ``predicted`` applies the manifest's tuned threshold for binary ensembles,
    else the argmax.
    """
    from trainers.config import CropConfig

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if batch_size < 1:
        raise ValueError(f"`batch_size >= 1` must hold, got batch_size={batch_size}")
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    files = find_images(paths)
    prep = manifest["preprocessing"]
    crop = CropConfig(fraction=prep["crop"]["fraction"], size=prep["crop"]["size"])
    size = int(prep["resize"]["size"][0])
    classes = list(manifest["class_names"])
    run = _runner(model_dir, manifest, backend)
    probs = np.full((len(files), len(classes)), np.nan, dtype=np.float64)
    errors: list[str | None] = [None] * len(files)

    from tqdm.auto import tqdm

    with tqdm(total=len(files), desc="predict", unit="image", disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            chunk = range(start, min(start + batch_size, len(files)))
            images, rows = [], []
            for i in chunk:
                image, errors[i] = _read(files[i], crop, size)
                if image is not None:
                    images.append(image)
                    rows.append(i)
            if images:
                x = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
                probs[rows] = run(np.ascontiguousarray(x))
            bar.update(len(chunk))

    table = pd.DataFrame({"path": [str(f) for f in files]})
    for j, c in enumerate(classes):
        table[prob_column(c)] = probs[:, j]
    table["predicted"] = _decide(probs, classes, manifest.get("threshold"))
    table["error"] = errors
    if skip_bad:
        table = table[table["error"].isna()].reset_index(drop=True)
    return table


def _decide(probs: np.ndarray, classes: list[str], threshold: float | None) -> list[str | None]:
    from trainers.metrics import positive_index

    ok = ~np.isnan(probs).any(axis=1)
    if threshold is not None and len(classes) == 2:
        pos = positive_index(classes, 2)
        idx = np.where(probs[:, pos] >= threshold, pos, 1 - pos)
    else:
        idx = np.nan_to_num(probs, nan=-1.0).argmax(axis=1)
    return [classes[i] if good else None for i, good in zip(idx, ok)]
