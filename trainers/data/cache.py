"""Pre-processing (decode, centre crop, resize) and the decoded-image cache.

:func:`preprocess_image` is THE definition of pre-processing: training, evaluation, the
exported model's manifest and ``wen predict`` all call it, so an image is seen the same way
everywhere.

:class:`DecodedStore` keeps every pre-processed image of a dataset in one memory-mapped uint8
array of shape (N, size, size, 3), so a trial reads bytes instead of decoding a BMP and
resizing it each epoch. The store is keyed by (manifest hash, crop, size): new data or a new
crop gives a new key and a new file, never a stale image.

>>> import tempfile, numpy as np
>>> from PIL import Image
>>> from trainers.config import CropConfig
>>> d = Path(tempfile.mkdtemp())
>>> Image.fromarray(np.full((45, 45, 3), 200, np.uint8)).save(d / "a.bmp")
>>> store = DecodedStore.open_or_build([d / "a.bmp"], ["demo"], CropConfig(), 16, d, progress=False)
>>> len(store), store[0].shape, store.built
(1, (16, 16, 3), True)
>>> DecodedStore.open_or_build([d / "a.bmp"], ["demo"], CropConfig(), 16, d).built
False
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainers._atomic import atomic_path, atomic_write_text
from trainers.config import CropConfig
from trainers.data.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["CacheBuildError", "DecodedStore", "crop_box", "default_cache_root", "preprocess_image"]

log = logging.getLogger("wen.data")

_FORMAT_VERSION = 1  # bump when preprocess_image changes what it produces


class CacheBuildError(DataError):
    """A file could not be decoded while the cache was being built."""


def default_cache_root() -> Path:
    """``$WEN_CACHE_DIR/decoded``, else ``~/.cache/wen-search/decoded``."""
    base = os.environ.get("WEN_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "wen-search") / "decoded"


# ------------------------------------------------------------------------- pre-processing


def crop_box(width: int, height: int, crop: CropConfig | None) -> tuple[int, int, int, int]:
    """The centred square ``(left, top, right, bottom)`` that ``crop`` keeps of an image.

    ``crop.fraction`` keeps that share of the shorter side (2/3 of 450 is 300, box
    (75, 75, 375, 375)); ``crop.size`` keeps a fixed side; neither (or ``crop=None``) keeps the
    centred square of the shorter side.

    >>> crop_box(450, 450, CropConfig(fraction=2 / 3))
    (75, 75, 375, 375)
    """
    short = min(width, height)
    if crop is None or (crop.fraction is None and crop.size is None):
        side = short
    elif crop.size is not None:
        if crop.size > short:
            raise ValueError(
                f"data.crop.size={crop.size} is larger than the image's shorter side {short} "
                f"({width}x{height}): lower data.crop.size or use data.crop.fraction"
            )
        side = crop.size
    else:
        assert crop.fraction is not None
        side = max(1, int(round(short * crop.fraction)))
    left = (width - side) // 2
    top = (height - side) // 2
    return left, top, left + side, top + side


def preprocess_image(
    path: str | Path | Image.Image, crop: CropConfig | None, size: int
) -> np.ndarray:
    """Decode ``path`` (PIL, RGB), centre-crop it (:func:`crop_box`) and resize to ``size``.

    Returns a (size, size, 3) uint8 array. The resize is PIL's bilinear filter, which is
    antialiased (its support widens with the reduction factor), matching torchvision's
    ``antialias=True``. An already opened PIL image may be passed instead of a path.
    """
    from PIL import Image

    if size < 1:
        raise ValueError(f"`size >= 1` must hold, got size={size}: pass data.input_size")
    if isinstance(path, Image.Image):
        image = path
    else:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    image = image.convert("RGB")
    box = crop_box(image.width, image.height, crop)
    image = image.crop(box)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


# ---------------------------------------------------------------------------------- store


def _crop_key(crop: CropConfig | None) -> dict[str, Any]:
    if crop is None:
        return {"fraction": None, "size": None}
    return {"fraction": crop.fraction, "size": crop.size}


def store_key(key_parts: Sequence[object], crop: CropConfig | None, size: int, count: int) -> str:
    """The store's file name stem: a hash of the data key, the crop, the size and the count."""
    blob = json.dumps(
        {
            "version": _FORMAT_VERSION,
            "parts": [str(p) for p in key_parts],
            "crop": _crop_key(crop),
            "size": size,
            "count": count,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path``; other processes wait here."""
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class DecodedStore:
    """A memory-mapped uint8 array (N, size, size, 3) of pre-processed images.

    Open it with :meth:`open_or_build`; ``store[i]`` is row ``i`` (the i-th path given at
    build time) and ``store.built`` says whether this call decoded the images. The object
    pickles as its file path, so DataLoader workers re-open the map instead of copying it.
    """

    def __init__(self, path: Path, meta: dict[str, Any], built: bool = False) -> None:
        self.path = Path(path)
        self.meta = meta
        self.key: str = meta["key"]
        self.size: int = int(meta["size"])
        self.built = built
        self._array: np.ndarray | None = None

    # -- access
    @property
    def array(self) -> np.ndarray:
        """The read-only memory map (opened on first use)."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return int(self.meta["count"])

    def __getitem__(self, index: int) -> np.ndarray:
        return self.array[index]

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "meta": self.meta, "built": self.built}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["meta"], state["built"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"DecodedStore({str(self.path)!r}, n={len(self)}, size={self.size})"

    # -- open / build
    @classmethod
    def open_or_build(
        cls,
        paths: Sequence[str | Path],
        key_parts: Sequence[object],
        crop: CropConfig | None,
        size: int,
        root: str | Path | None = None,
        *,
        workers: int | None = None,
        progress: bool = True,
    ) -> DecodedStore:
        """Open the store for this key under ``root``, building it first when it is missing.

        ``key_parts`` identify the data in row order (the manifest hash); with ``crop`` and
        ``size`` they form the key, so changed data or a changed crop builds a new store.
        Several processes may call this at once: one builds (holding a lock file, writing to
        a hidden temporary file that is renamed into place), the others wait and open it.
        """
        root = Path(root) if root is not None else default_cache_root()
        root.mkdir(parents=True, exist_ok=True)
        key = store_key(key_parts, crop, size, len(paths))
        data_path, meta_path = root / f"{key}.npy", root / f"{key}.json"
        store = cls._open_existing(data_path, meta_path, key)
        if store is not None:
            return store
        with _locked(root / f".{key}.lock"):
            store = cls._open_existing(data_path, meta_path, key)  # built while we waited?
            if store is not None:
                return store
            for stale in root.glob(f".{key}.*.tmp*"):  # left by a builder that crashed
                stale.unlink(missing_ok=True)
            meta = {
                "key": key,
                "parts": [str(p) for p in key_parts],
                "crop": _crop_key(crop),
                "size": size,
                "count": len(paths),
                "version": _FORMAT_VERSION,
                "rows": [str(p) for p in paths],
            }
            start = time.perf_counter()
            cls._build(paths, crop, size, data_path, workers, progress)
            meta["build_seconds"] = round(time.perf_counter() - start, 3)
            # the sidecar appears last: its presence marks a complete store
            atomic_write_text(meta_path, json.dumps(meta), what="image cache")
            log.info(
                "decoded-image cache built: %s (%d images, %.1f s)",
                data_path,
                len(paths),
                meta["build_seconds"],
            )
            return cls(data_path, meta, built=True)

    @classmethod
    def _open_existing(cls, data_path: Path, meta_path: Path, key: str) -> DecodedStore | None:
        if not (meta_path.is_file() and data_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if meta.get("key") != key:
            return None
        store = cls(data_path, meta, built=False)
        expected = (len(store), store.size, store.size, 3)
        if store.array.shape != expected or store.array.dtype != np.uint8:
            return None
        return store

    @staticmethod
    def _build(
        paths: Sequence[str | Path],
        crop: CropConfig | None,
        size: int,
        data_path: Path,
        workers: int | None,
        progress: bool,
    ) -> None:
        from tqdm.auto import tqdm

        shape = (len(paths), size, size, 3)
        # open_memmap needs a file name, so the path form of the atomic writer
        with atomic_path(data_path, what="image cache") as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)

            def load(i: int) -> int:
                try:
                    array[i] = preprocess_image(paths[i], crop, size)  # noqa: F821 - bound above, deleted only after the pool ends
                except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three
                    raise CacheBuildError(
                        f"cannot decode {str(paths[i])!r} while building the image cache: {exc}. "
                        "Run `wen data check ROOT` to list bad files, then remove them or set "
                        "data.skip_bad_files=true"
                    ) from exc
                return i

            # PIL releases the GIL while decoding and resizing, so threads scale
            n_workers = workers or min(8, os.cpu_count() or 1)
            bar = tqdm(
                total=len(paths),
                desc="decoding images into the cache",
                unit="img",
                mininterval=2.0,
                disable=not progress,
            )
            pool = ThreadPoolExecutor(max_workers=n_workers)
            try:
                with bar:
                    for _ in pool.map(load, range(len(paths))):
                        bar.update(1)
            finally:
                # on a bad file, drop the queued decodes instead of finishing them
                pool.shutdown(wait=True, cancel_futures=True)
            array.flush()
            del array
