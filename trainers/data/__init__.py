"""Data layer: dataset layouts and manifests, synthetic data, checks, splits, transforms, cache.

Images on disk become one manifest table (one row per image: label, subject, official split
and fold, size, content hash); everything downstream works from that table. No Ray import.

>>> from trainers.data import synthesize, read_manifest, check_dataset
>>> import tempfile
>>> root = synthesize(Path(tempfile.mkdtemp()) / "d", "cnmc-kaggle", 4, 2, 32, seed=0)
>>> read_manifest(root).layout, check_dataset(root).ok
('cnmc-kaggle', True)
"""

from pathlib import Path  # noqa: F401 - used by the doctest above

# --- layouts, manifests, synthetic data, checks (layouts.py, manifest.py, synth.py, check.py)
from trainers.data.check import CheckReport, check_dataset, check_manifest
from trainers.data.errors import LayoutError
from trainers.data.layouts import LAYOUTS, detect_layout, read_manifest
from trainers.data.manifest import (
    Manifest,
    Problem,
    load_manifest_file,
    manifest_hash,
    write_manifest,
)
from trainers.data.synth import ensure_synthetic, read_synthetic_info, synthesize

_LAYOUT_NAMES = [
    "LAYOUTS",
    "CheckReport",
    "LayoutError",
    "Manifest",
    "Problem",
    "check_dataset",
    "check_manifest",
    "detect_layout",
    "ensure_synthetic",
    "load_manifest_file",
    "manifest_hash",
    "read_manifest",
    "read_synthetic_info",
    "synthesize",
    "write_manifest",
]

# --- splits, augmentation, decoded-image cache, prepared data ----------------------------
from trainers.data.augment import AUGMENTATIONS, create_augmentation
from trainers.data.cache import CacheBuildError, DecodedStore, default_cache_root, preprocess_image
from trainers.data.dataset import PreparedData, prepare_data
from trainers.data.errors import DataError
from trainers.data.splits import SPLITS, LeakageError, assign_splits, audit_leakage

_PIPELINE_NAMES = [
    "AUGMENTATIONS",
    "SPLITS",
    "CacheBuildError",
    "DataError",
    "DecodedStore",
    "LeakageError",
    "PreparedData",
    "assign_splits",
    "audit_leakage",
    "create_augmentation",
    "default_cache_root",
    "preprocess_image",
    "prepare_data",
]

__all__ = sorted(_LAYOUT_NAMES + _PIPELINE_NAMES)
