"""What can be checked against the dataset (and the weight caches) is checked on the driver,
before any trial starts.

A config can be valid and still not fit its data: ``search.folds=[0, 7]`` on a dataset with
three folds, a class weight list of the wrong length, a fold whose validation split holds no
subject of a class. Each trial would find out on its own, one after the other; the driver
reads the dataset once and says it all before Ray runs anything (and ``--dry-run`` prints it).

The backbones' minimum input sizes are checked when the config loads, for every value the
search space can pick (``search.space.space_value_problems``); the ImageNet weights of every
backbone the space can pick are looked for in the local caches here too
(``trainers.weights.missing_weight_problems``), since training never downloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from search.config import WenConfig

__all__ = ["DatasetPlan", "FoldPlan", "plan_dataset"]

_SPLITS = ("train", "val", "test")


@dataclass
class FoldPlan:
    """One validation fold's split: images and subjects per split and class."""

    fold: int
    images: dict[str, dict[str, int]]
    subjects: dict[str, dict[str, int]]

    def line(self) -> str:
        with_subjects = any(n for per_class in self.subjects.values() for n in per_class.values())
        parts = []
        for split in _SPLITS:
            imgs = self.images.get(split, {})
            subs = self.subjects.get(split, {})
            shown = [
                f"{c} {n}/{subs.get(c, 0)}" if with_subjects else f"{c} {n}"
                for c, n in imgs.items()
            ]
            parts.append(f"{split}: {', '.join(shown) or 'empty'}")
        unit = "images/subjects per class" if with_subjects else "images per class; no subject ids"
        return f"fold {self.fold}: " + "; ".join(parts) + f" ({unit})"


@dataclass
class DatasetPlan:
    """The dataset as the search will see it, and what does not fit the config."""

    root: str
    layout: str
    class_names: list[str]
    folds: list[FoldPlan] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"note: {n}" for n in self.notes]
        classes = f"; classes {', '.join(self.class_names)}" if self.class_names else ""
        out.append(f"dataset: {self.root} ({self.layout}{classes})")
        out += ["  " + f.line() for f in self.folds]
        return out


def _counts(part: pd.DataFrame, class_names: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    images = {c: int((part["class_name"] == c).sum()) for c in class_names}
    subjects = {
        c: int(part.loc[part["class_name"] == c, "subject_id"].dropna().nunique())
        for c in class_names
    }
    return images, subjects


def _fold_plan(frame: pd.DataFrame, config: WenConfig, fold: int, names: list[str]) -> FoldPlan:
    from trainers.data.splits import assign_splits

    # a group_kfold fold >= n_folds is refused when the config loads (SplitConfig)
    split = config.data.split.model_copy(update={"fold": fold})
    assigned = assign_splits(frame, split)
    plan = FoldPlan(fold, {}, {})
    for name in _SPLITS:
        part = assigned[assigned["split"] == name]
        if len(part):
            plan.images[name], plan.subjects[name] = _counts(part, names)
    return plan


def _fold_problems(plan: FoldPlan, key: str) -> list[str]:
    problems = []
    train, val = plan.images.get("train", {}), plan.images.get("val", {})
    if not val or not sum(val.values()):
        problems.append(
            f"{key}={plan.fold}: the validation split is empty, and checkpoints and the "
            "ensemble are chosen on it: change data.split"
        )
    missing = [c for c, n in train.items() if n == 0]
    if missing or not train:
        problems.append(
            f"{key}={plan.fold}: the training split has no images of class(es) "
            f"{', '.join(missing) or 'any'}: change data.split or add images of those classes"
        )
    return problems


def _class_problems(config: WenConfig, names: list[str]) -> list[str]:
    weights = config.loss.class_weights
    if isinstance(weights, list) and len(weights) != len(names):
        return [
            f"loss.class_weights has {len(weights)} value(s) but the dataset has {len(names)} "
            f"classes ({', '.join(names)}): give one weight per class, in that order"
        ]
    return []


def _folds(config: WenConfig) -> tuple[list[int], str]:
    if config.search.folds is not None:
        return list(config.search.folds), "search.folds"
    return [config.data.split.fold], "data.split.fold"


def plan_dataset(config: WenConfig) -> DatasetPlan:
    """Read the dataset once and check it against ``config``; may set ``data.root`` to the
    dataset folder one level down (an unzipped archive), saying so in ``notes``."""
    from trainers.data.layouts import LayoutError, find_dataset_root, read_manifest
    from trainers.data.synth import ensure_synthetic
    from trainers.weights import missing_weight_problems

    data = config.data
    notes: list[str] = []
    if data.synthetic is not None:
        root = Path(ensure_synthetic(data.synthetic, data.synthetic_dir))
        layout = data.synthetic.layout if data.layout == "auto" else data.layout
    else:
        assert data.root is not None  # DataConfig requires root or synthetic
        root, note = find_dataset_root(Path(data.root), data.layout)
        layout = data.layout
        if note:
            notes.append(note)
            config.data.root = root  # the trials read the folder the driver checked
    weights = missing_weight_problems(config)
    try:
        manifest = read_manifest(root, layout)
    except LayoutError as err:
        problems = [f"data.root: {err}", *weights]
        return DatasetPlan(str(root), layout, [], problems=problems, notes=notes)
    names = list(manifest.class_names)
    plan = DatasetPlan(manifest.root, manifest.layout, names, problems=weights, notes=notes)
    plan.problems += _class_problems(config, names)
    labelled = manifest.frame[manifest.frame["label"] >= 0]
    if not len(labelled):
        plan.problems.append(f"data.root: {manifest.root} has no labelled images to train on")
        return plan
    folds, key = _folds(config)
    for fold in folds:
        try:
            fold_plan = _fold_plan(manifest.frame, config, fold, names)
        except ValueError as err:  # the split's own message names the key and the fix
            plan.problems.append(f"{key}={fold}: {err}")
            continue
        plan.folds.append(fold_plan)
        plan.problems += _fold_problems(fold_plan, key)
    return plan
