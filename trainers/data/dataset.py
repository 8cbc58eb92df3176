"""From a :class:`~trainers.config.DataConfig` to seeded PyTorch data loaders.

:func:`prepare_data` runs the data stage once per trial: synthesise (when asked), read the
manifest, refuse or skip bad files, assign splits, audit them for leakage and open (or build)
the decoded-image cache. :class:`PreparedData` then hands out loaders whose batches are
``(images uint8 [B, 3, S, S], labels int64 [B], indices int64 [B])``, ``indices`` being row
positions in ``PreparedData.manifest``. Normalisation is left to the trainer (on the device,
with the backbone's mean and std).

Every random draw (which images an epoch oversamples, their order, each image's augmentation)
comes from the loader's seed and the epoch number, never from global state, so a seed gives
the same batches whatever the number of worker processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from trainers._atomic import atomic_write_text
from trainers.config import CropConfig, DataConfig
from trainers.data.errors import DataError
from trainers.data.splits import SPLITS, assign_splits, audit_leakage

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

    from trainers.data.cache import DecodedStore

__all__ = ["DataError", "EpochSampler", "PreparedData", "prepare_data"]

log = logging.getLogger("wen.data")
_MAX_SHOWN = 20


# ------------------------------------------------------------------------------- datasets


class _ImageRows:
    """Map-style dataset over every manifest row: ``[row]`` or ``[(row, aug_seed)]``.

    Images come from the decoded store when there is one, else they are pre-processed on the
    fly. With an ``aug_seed`` the transform runs with torch's default generator seeded with
    it, so an image's augmentation depends on the seed alone, not on which worker draws it.
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: np.ndarray,
        store: DecodedStore | None,
        crop: CropConfig,
        size: int,
        transform: Any | None,
    ) -> None:
        self.paths = list(paths)
        self.labels = labels
        self.store = store
        self.crop = crop
        self.size = size
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, row: int) -> torch.Tensor:
        """Row ``row``'s pre-processed image as a uint8 CHW tensor."""
        import torch

        from trainers.data.cache import preprocess_image

        if self.store is not None:
            array = self.store[row]
        else:
            array = preprocess_image(self.paths[row], self.crop, self.size)
        # one copy, HWC -> CHW; it also detaches the tensor from the read-only map
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        import torch

        row, aug_seed = (item, None) if isinstance(item, (int, np.integer)) else item
        row = int(row)
        image = self.image(row)
        if self.transform is not None:
            # v2 transforms draw from torch's default CPU generator: seed it for this image and
            # put its state back (a save/restore costs microseconds, fork_rng far more)
            generator = torch.default_generator
            state = generator.get_state()
            generator.manual_seed(int(aug_seed) if aug_seed is not None else row)
            try:
                image = self.transform(image)
            finally:
                generator.set_state(state)
        return image, int(self.labels[row]), row


class _ImageBatches(_ImageRows):
    """:class:`_ImageRows` that hands out whole batches: one slice of the cache per batch.

    The DataLoader calls ``__getitems__`` with a batch's items when a dataset has it, so a
    batch is one fancy-indexed read of the memory map (no per-image tensors, no collation);
    :func:`_already_batched` is its ``collate_fn``. For loaders without per-image transforms:
    evaluation, and training with ``augment="device"``.
    """

    def __getitems__(
        self, items: Sequence[Any]
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        import torch

        rows = np.fromiter(
            (int(i if isinstance(i, (int, np.integer)) else i[0]) for i in items),
            dtype=np.int64, count=len(items),
        )  # fmt: skip
        if self.store is not None:
            array = np.asarray(self.store.array[rows])  # [B, S, S, 3], one read
        else:
            array = np.stack([self.image(int(r)).numpy().transpose(1, 2, 0) for r in rows])
        images = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
        return [
            (images, torch.from_numpy(self.labels[rows].astype(np.int64)), torch.from_numpy(rows))
        ]


def _already_batched(batch: list[Any]) -> Any:
    """``collate_fn`` of :class:`_ImageBatches`: its ``__getitems__`` returned the batch."""
    return batch[0]


class EpochSampler:
    """Yields ``(row, aug_seed)`` for one training epoch; each pass is a new, seeded epoch.

    ``balance="oversample"`` keeps every image and adds random draws (with replacement) of the
    minority classes until each class has as many as the largest one (the main study's random
    oversampling), then shuffles; ``"weighted"`` draws ``len(rows)`` images with torch's
    ``WeightedRandomSampler`` at inverse class frequency; ``"none"`` shuffles. The draws for
    epoch ``e`` come from a generator seeded with ``(seed, e)``; :meth:`set_epoch` moves to a
    given epoch (for a resumed run).
    """

    def __init__(self, rows: np.ndarray, labels: np.ndarray, balance: str, seed: int) -> None:
        if balance not in ("oversample", "weighted", "none"):
            raise ValueError(
                f"unknown data.balance {balance!r}; valid names: none, oversample, weighted"
            )
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.balance = balance
        self.seed = seed
        self.epoch = 0
        classes, counts = np.unique(self.labels, return_counts=True)
        self._classes = classes
        self._counts = counts

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch`` on the next pass."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.balance == "oversample" and len(self._counts):
            return int(self._counts.max()) * len(self._counts)
        return len(self.rows)

    def _generator(self) -> torch.Generator:
        import torch

        mixed = hashlib.sha256(f"{self.seed}:{self.epoch}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(mixed[:8], "little") >> 1)

    def epoch_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's rows and augmentation seeds (does not advance the epoch)."""
        import torch
        from torch.utils.data import WeightedRandomSampler

        g = self._generator()
        if self.balance == "oversample" and len(self._counts):
            target = int(self._counts.max())
            parts = [self.rows]
            for cls, count in zip(self._classes, self._counts, strict=True):
                if count < target:
                    members = self.rows[self.labels == cls]
                    extra = torch.randint(len(members), (target - count,), generator=g).numpy()
                    parts.append(members[extra])
            drawn = np.concatenate(parts)
            drawn = drawn[torch.randperm(len(drawn), generator=g).numpy()]
        elif self.balance == "weighted" and len(self.rows):
            per_class = dict(zip(self._classes.tolist(), self._counts.tolist(), strict=True))
            weights = [1.0 / per_class[int(c)] for c in self.labels]
            sampler = WeightedRandomSampler(weights, len(self.rows), replacement=True, generator=g)
            drawn = self.rows[np.fromiter(iter(sampler), dtype=np.int64, count=len(self.rows))]
        else:
            drawn = self.rows[torch.randperm(len(self.rows), generator=g).numpy()]
        seeds = torch.randint(0, 2**62, (len(drawn),), generator=g).numpy()
        return drawn, seeds

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rows, seeds = self.epoch_rows()
        self.epoch += 1
        return iter(zip(rows.tolist(), seeds.tolist(), strict=True))


# --------------------------------------------------------------------------- prepared data


@dataclass
class PreparedData:
    """A split, checked dataset and the loaders over it.

    >>> import tempfile
    >>> from trainers.config import DataConfig
    >>> tmp = Path(tempfile.mkdtemp())
    >>> config = DataConfig(synthetic={"size": 32, "subjects_per_class": 4,
    ...     "cells_per_subject": 4}, synthetic_dir=tmp / "data", input_size=32)
    >>> data = prepare_data(config, seed=0, cache_root=tmp / "cache")
    >>> sorted(data.manifest["split"].unique())
    ['final', 'test', 'train', 'val']
    >>> images, labels, rows = next(iter(data.loader("train", train=True, batch_size=4, seed=0)))
    >>> tuple(images.shape), images.dtype
    ((4, 3, 32, 32), torch.uint8)
    """

    manifest: pd.DataFrame
    class_names: list[str]
    input_size: int
    crop: CropConfig = field(default_factory=CropConfig)
    augmentation: str = "paper"
    balance: str = "oversample"
    store: DecodedStore | None = None
    root: Path | None = None
    layout: str = ""
    seed: int = 0

    def split_indices(self, split: str) -> np.ndarray:
        """Row positions in ``manifest`` of the images in ``split`` (ascending)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid names: {', '.join(SPLITS)}")
        return np.flatnonzero(self.manifest["split"].to_numpy() == split).astype(np.int64)

    def dataset(self, transform: Any | None = None) -> _ImageRows:
        """The map-style dataset over every row (``[row] -> (image, label, row)``)."""
        return _ImageRows(
            self.manifest["path"].astype(str).tolist(),
            self.manifest["label"].to_numpy(dtype=np.int64),
            self.store,
            self.crop,
            self.input_size,
            transform,
        )

    def batches(self) -> _ImageBatches:
        """The dataset that reads a whole batch of rows at once (no per-image transform)."""
        return _ImageBatches(
            self.manifest["path"].astype(str).tolist(),
            self.manifest["label"].to_numpy(dtype=np.int64),
            self.store,
            self.crop,
            self.input_size,
            None,
        )

    def loader(
        self,
        split: str,
        *,
        train: bool,
        batch_size: int,
        seed: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        augment: Literal["loader", "device"] = "loader",
    ) -> DataLoader:
        """Batches of ``split``; ``train=True`` augments and rebalances, else fixed order.

        ``seed`` (default: the trial seed given to :func:`prepare_data`) fixes every epoch's
        draws; each pass over the loader is the next epoch, and
        ``loader.batch_sampler.sampler.set_epoch(e)`` jumps to epoch ``e`` (a resumed run).
        ``augment="loader"`` augments training images one by one in the loader (the
        torchvision path of :mod:`trainers.data.augment`); ``"device"`` leaves training
        batches un-augmented (still rebalanced and shuffled) and reads each batch as one slice
        of the decoded cache: the caller augments them on its device with
        :func:`trainers.data.batch_augment.create_batch_augmentation`. Loaders without a
        per-image transform (evaluation, ``"device"``) read whole batches at once.
        """
        import torch
        from torch.utils.data import BatchSampler, DataLoader

        from trainers.data.augment import create_augmentation

        seed = self.seed if seed is None else seed

        if batch_size < 1:
            raise ValueError(f"`batch_size >= 1` must hold, got batch_size={batch_size}")
        if augment not in ("loader", "device"):
            raise ValueError(
                f"unknown augment {augment!r} (data.augment_on); valid names: loader (per image "
                "in the loader), device (the caller augments whole batches on its device)"
            )
        rows = self.split_indices(split)
        if len(rows) == 0:
            raise DataError(
                f"split {split!r} has no images (splits: "
                f"{self.manifest['split'].value_counts().to_dict()}): change data.split"
            )
        if train:
            if (self.manifest["label"].to_numpy()[rows] < 0).any():
                raise DataError(f"split {split!r} has unlabelled images and cannot be trained on")
            transform = (
                create_augmentation(self.augmentation, self.input_size)
                if augment == "loader"
                else None
            )
            sampler: Any = EpochSampler(
                rows, self.manifest["label"].to_numpy(dtype=np.int64)[rows], self.balance, seed
            )
            # a lone last image breaks BatchNorm layers in training mode, so drop it
            drop_last = len(sampler) % batch_size == 1 and len(sampler) > 1
        else:
            transform = None
            sampler = rows.tolist()
            drop_last = False
        batched = transform is None
        dataset = self.batches() if batched else self.dataset(transform)
        return DataLoader(
            dataset,
            batch_sampler=BatchSampler(sampler, batch_size, drop_last=drop_last),
            collate_fn=_already_batched if batched else None,
            num_workers=num_workers,
            # the workers hold no per-epoch state (the sampler runs in this process)
            persistent_workers=num_workers > 0,
            pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(seed),
        )


# ------------------------------------------------------------------------------- prepare


def _bad_files(frame: pd.DataFrame, problems: Sequence[Any]) -> dict[int, list[str]]:
    """Rows (positions) named by an error-severity problem (by sample id or absolute path)."""
    by_key: dict[str, int] = {}
    for pos, (path, sid) in enumerate(zip(frame["path"], frame["sample_id"], strict=True)):
        by_key[str(path)] = pos
        by_key[str(sid)] = pos
    bad: dict[int, list[str]] = {}
    for p in problems:
        pos = by_key.get(str(p.path)) if p.severity == "error" else None
        if pos is not None:
            bad.setdefault(pos, []).append(str(p.problem))
    return bad


def _refuse(root: Path, problems: Sequence[Any]) -> DataError:
    shown = [f"  - {p.path}: {p.problem}" for p in problems[:_MAX_SHOWN]]
    more = len(problems) - len(shown)
    lines = [f"the dataset at {root} has {len(problems)} problem(s) with its files:", *shown]
    if more:
        lines.append(f"  ... and {more} more")
    lines.append(
        f"fix: run `wen data check {root}` and remove or repair the files, "
        "or set data.skip_bad_files=true to skip them"
    )
    return DataError("\n".join(lines))


def _data_key(frame: pd.DataFrame) -> list[str]:
    """Cache key parts: the manifest hash, which covers the row order the store keeps."""
    from trainers.data.manifest import manifest_hash

    return [manifest_hash(frame)]


def _file_errors(manifest: Any, cache_dir: Path | None) -> list[Any]:
    """Error-severity problems of ``check_manifest``, remembered per manifest content.

    ``check_manifest`` decodes every image; its verdict depends only on the files' bytes, the
    manifest rows (both covered by the manifest hash) and the reader's own problems, so with a
    cache folder it is stored under that key and a later trial on the same data reads it back.
    """
    from trainers.data.check import check_manifest
    from trainers.data.manifest import Problem, manifest_hash

    record = None
    if cache_dir is not None:
        reader = json.dumps([p.to_dict() for p in manifest.problems], sort_keys=True)
        key = hashlib.sha256(f"{manifest_hash(manifest.frame)}\n{reader}".encode()).hexdigest()
        record = Path(cache_dir) / f"check-{key[:24]}.json"
        if record.is_file():
            try:
                return [Problem(**p) for p in json.loads(record.read_text())]
            except (OSError, ValueError, TypeError):
                pass  # unreadable record: check again and rewrite it
    errors = [p for p in check_manifest(manifest).problems if p.severity == "error"]
    if record is not None:
        text = json.dumps([p.to_dict() for p in errors])
        atomic_write_text(record, text, what="file-check record")
    return errors


def prepare_data(data: DataConfig, seed: int, cache_root: Path | None = None) -> PreparedData:
    """Read, check, split, audit and cache a dataset; see the module docstring.

    ``seed`` is the trial's seed, the loaders' default (the split has its own,
    ``data.split.seed``). ``cache_root`` overrides ``data.cache_dir`` and the default cache
    folder (``$WEN_CACHE_DIR/decoded``); the decoded store and the remembered file check live
    there.
    """
    from trainers.data.cache import DecodedStore, default_cache_root
    from trainers.data.layouts import read_manifest
    from trainers.data.synth import ensure_synthetic

    if data.synthetic is not None:
        root = Path(ensure_synthetic(data.synthetic, data.synthetic_dir))
        layout = data.synthetic.layout if data.layout == "auto" else data.layout
    elif data.root is not None:
        root = Path(data.root)
        layout = data.layout
    else:  # DataConfig's validator makes this unreachable
        raise DataError("data needs a dataset: set data.root or data.synthetic")

    cache_dir = cache_root if cache_root is not None else data.cache_dir
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_root()
    manifest = read_manifest(root, layout)
    for note in manifest.notes:  # e.g. the dataset one folder down, as an archive unzips
        log.warning(note)
    frame = manifest.frame.reset_index(drop=True)
    problems = _file_errors(manifest, cache_dir if data.cache else None)
    if problems:
        if not data.skip_bad_files:
            raise _refuse(root, problems)
        bad = _bad_files(frame, problems)
        for pos, reasons in sorted(bad.items()):
            log.warning("skipping bad file %s: %s", frame["path"].iat[pos], "; ".join(reasons))
        named = set(frame["sample_id"].iloc[sorted(bad)]) | set(frame["path"].iloc[sorted(bad)])
        for p in problems:
            if p.path not in named:
                log.warning("not skippable (names no image): %s: %s", p.path, p.problem)
        frame = frame.drop(index=sorted(bad)).reset_index(drop=True)
    if frame.empty:
        raise DataError(f"the dataset at {root} has no usable images: run `wen data check {root}`")

    frame = assign_splits(frame, data.split)
    audit_leakage(frame)

    store = None
    if data.cache:
        store = DecodedStore.open_or_build(
            frame["path"].astype(str).tolist(),
            _data_key(frame),
            data.crop,
            data.input_size,
            cache_dir,
        )
    return PreparedData(
        manifest=frame,
        class_names=list(manifest.class_names),
        input_size=data.input_size,
        crop=data.crop,
        augmentation=data.augmentation,
        balance=data.balance,
        store=store,
        root=root,
        layout=manifest.layout,
        seed=seed,
    )
