"""Typed, validated configuration of one trial.

YAML is validated once, at the edge, into these models. Every model rejects unknown keys;
:func:`load_config` collects every problem (unknown keys with the allowed ones, wrong types,
out-of-range values, and with ``checks=trainers.checks.check_names`` unknown registry names)
and raises one :class:`ConfigError` that names each key by its full path, the rule it breaks
and the fix. This module is a leaf: it imports no registry, model or stage of the project.

The search and ensemble stages extend :class:`TrialConfig` with their own sections
(``search/config.py``); the trainer only ever sees the trial part.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from trainers._atomic import atomic_write_text
from trainers.errors import WenError

__all__ = [
    "ConfigChecks",
    "ConfigError",
    "CropConfig",
    "LocalPath",
    "absolute_path",
    "ray_job_working_dir",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "SplitConfig",
    "SyntheticSpec",
    "TrainConfig",
    "TrialConfig",
    "apply_overrides",
    "config_hash",
    "format_validation_error",
    "load_config",
    "parse_overrides",
]


class ConfigError(WenError, ValueError):
    """One or more configuration problems, each naming the key, the rule and the fix."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(problems)} configuration problem(s){where}:"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


#: Set by Ray's job supervisor in the environment of a ``ray job submit`` entrypoint.
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def ray_job_working_dir() -> str | None:
    """The working folder of the Ray job this process is the entrypoint of, else None.

    ``ray job submit --working-dir DIR`` uploads DIR and runs the entrypoint in a temporary
    copy of it on the head node; paths relative to that copy exist only there, and only while
    the job runs.
    """
    raw = os.environ.get(RAY_JOB_ENV)
    if not raw:
        return None
    try:
        runtime_env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return None
    return os.getcwd() if runtime_env.get("working_dir") else None


def absolute_path(path: Path) -> Path:
    """``path`` with ``~`` expanded, made absolute against the folder this process runs in.

    Config paths are resolved once, when the config loads on the driver: Ray Tune runs each
    trial in its own working folder (on another node, perhaps), where a relative path would
    point nowhere. Symbolic links are kept (``os.path.abspath``, not ``resolve``) so a shared
    mount reached through a link keeps the name every node knows it by. Idempotent.

    >>> absolute_path(Path("/data/cells")).as_posix()
    '/data/cells'
    """
    expanded = os.path.expanduser(os.fspath(path))
    if not os.path.isabs(expanded) and ray_job_working_dir():
        warnings.warn(
            f"the relative path {os.fspath(path)!r} is resolved inside the Ray job's temporary "
            f"copy of its working folder ({os.getcwd()}), which other nodes do not have and "
            "which is deleted after the job: give an absolute path that every node sees",
            stacklevel=2,
        )
    return Path(os.path.abspath(expanded))


#: A local path in a config: absolute once validated (see :func:`absolute_path`).
LocalPath = Annotated[Path, AfterValidator(absolute_path)]


class StrictModel(BaseModel):
    """Base model: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# --------------------------------------------------------------------------------------- data


def min_synthetic_subjects(layout: str) -> int:
    """Subjects per class a synthetic dataset in ``layout`` needs: the C-NMC layouts spread
    subjects over three training folds plus a labelled test set."""
    return 4 if layout.startswith("cnmc") else 1


class SyntheticSpec(StrictModel):
    """A synthetic dataset generated on first use instead of images on disk.

    The generator (``trainers.data.synth``) draws stained-cell-like images in the named layout.
    """

    layout: Literal["cnmc-kaggle", "cnmc-tcia", "all4", "imagefolder"] = Field(
        "cnmc-kaggle", description="Which real layout to imitate on disk."
    )
    subjects_per_class: int = Field(6, ge=1, description="Subjects drawn for each class.")
    cells_per_subject: int = Field(20, ge=1, description="Images per subject.")
    size: int = Field(96, ge=16, le=1024, description="Side of each square image in pixels.")
    seed: int = Field(0, ge=0, description="Seed of the generator; same seed, same files.")
    label_noise: float = Field(
        0.0, ge=0.0, lt=0.5, description="Share of labels flipped at random (a known ceiling)."
    )
    preset: str = Field(
        "morphology",
        description="Difficulty model (trainers.data.synth_presets): morphology = the original "
        "subtle morphology, best score unknown; complementary = independent stain-hue, "
        "stain-density and shape cues, where stain-jitter destroys the hue and "
        "brightness-jitter the density, so members trained with the two see different "
        "evidence; single-cue = one shape cue of the same total strength that no augmentation "
        "destroys. The latent presets record their Bayes ceiling (cell-level accuracy and AUC, "
        "Monte Carlo) in the dataset's .wen-synthetic.json.",
    )

    @model_validator(mode="after")
    def _enough_subjects(self) -> SyntheticSpec:
        # checked here, when the config loads, so a search fails before its first trial
        # instead of in every trial's data preparation
        minimum = min_synthetic_subjects(self.layout)
        if self.subjects_per_class < minimum:
            raise ValueError(
                f"`subjects_per_class >= {minimum}` must hold for layout {self.layout}, got "
                f"{self.subjects_per_class}: C-NMC layouts need three training folds plus a test "
                f"subject per class; raise subjects_per_class to {minimum}"
            )
        return self


class SplitConfig(StrictModel):
    """How images are split into train / val / test, always by subject where subjects are known."""

    method: Literal["official", "group_kfold", "group_holdout"] = Field(
        "official",
        description=(
            "official: the dataset's own folds (val = fold `fold`) and labelled test set; "
            "group_kfold: seeded StratifiedGroupKFold by subject, val = fold `fold`; "
            "group_holdout: one seeded grouped train/val/test split."
        ),
    )
    n_folds: int = Field(3, ge=2, le=20, description="Folds for group_kfold.")
    fold: int = Field(0, ge=0, description="Which fold is the validation fold.")
    val_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Validation share (group_holdout)."
    )
    test_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Test share when the dataset has no labelled test set."
    )
    seed: int = Field(0, ge=0, description="Seed of the split.")

    @model_validator(mode="after")
    def _fold_in_range(self) -> SplitConfig:
        if self.method == "group_kfold" and self.fold >= self.n_folds:
            raise ValueError(
                f"`fold < n_folds` must hold, got fold={self.fold}, n_folds={self.n_folds}: "
                "lower data.split.fold or raise data.split.n_folds"
            )
        if self.method == "group_holdout" and self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                "`val_fraction + test_fraction < 1` must hold, got "
                f"{self.val_fraction} + {self.test_fraction}: lower one of them"
            )
        return self


class CropConfig(StrictModel):
    """Centre crop applied before resizing: a fraction of the shorter side, or a fixed size."""

    fraction: float | None = Field(
        2 / 3, gt=0.0, le=1.0, description="Crop to this share of the shorter side (450 -> 300)."
    )
    size: int | None = Field(None, ge=8, description="Crop to this many pixels instead.")

    @model_validator(mode="after")
    def _one_of(self) -> CropConfig:
        if self.fraction is not None and self.size is not None:
            raise ValueError(
                "set one of data.crop.fraction and data.crop.size, got both: set the other to null"
            )
        return self


class DataConfig(StrictModel):
    """Where the images are, how they are split, pre-processed, augmented and batched."""

    root: LocalPath | None = Field(
        None,
        description="Dataset root on disk (real data); relative paths are relative to the "
        "folder wen runs in.",
    )
    layout: str = Field(
        "auto", description="Dataset layout: auto, cnmc-tcia, cnmc-kaggle, all4 or imagefolder."
    )
    synthetic: SyntheticSpec | None = Field(
        None, description="Generate this synthetic dataset instead of reading `root`."
    )
    synthetic_dir: LocalPath | None = Field(
        None, description="Where a synthetic dataset is written (default: the wen cache)."
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    crop: CropConfig = Field(default_factory=CropConfig)
    input_size: int = Field(224, ge=16, le=1024, description="Side of the model's input in pixels.")
    balance: Literal["oversample", "weighted", "none"] = Field(
        "oversample",
        description="oversample: repeat minority-class images until classes are equal (the "
        "study); weighted: a weighted sampler; none: as is.",
    )
    augmentation: str = Field("paper", description="Augmentation preset name.")
    augment_on: Literal["auto", "loader", "device"] = Field(
        "auto",
        description="Where training images are augmented (the same preset spec either way): "
        "device = the loader only slices the decoded cache and each whole batch is augmented on "
        "the trial's device with per-image random draws (Kornia, trainers.data.batch_augment); "
        "loader = per image with torchvision in the DataLoader (trainers.data.augment); auto = "
        "device on CUDA, loader on the CPU (on 2 CPU cores at 224 px both run about as fast, "
        "and the loader's work can overlap training in its worker processes).",
    )
    cache: bool = Field(True, description="Decode and crop each image once into a memory map.")
    cache_dir: LocalPath | None = Field(None, description="Decoded-image cache folder.")
    skip_bad_files: bool = Field(
        False, description="Skip (and log) files `wen data check` reports instead of refusing."
    )
    batch_size: int = Field(32, ge=1, description="Training batch size.")
    eval_batch_size: int | None = Field(None, ge=1, description="Evaluation batch (default 2x).")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")

    @model_validator(mode="after")
    def _root_or_synthetic(self) -> DataConfig:
        if self.root is None and self.synthetic is None:
            raise ValueError(
                "data needs a dataset: set data.root to a folder of images, or data.synthetic "
                "to generate one (for example data.synthetic.subjects_per_class=6)"
            )
        if self.root is not None and self.synthetic is not None:
            raise ValueError(
                "set one of data.root and data.synthetic, got both: set data.synthetic=null "
                "to read real data"
            )
        return self


# -------------------------------------------------------------------------------------- model


class ModelConfig(StrictModel):
    """The network: a timm backbone (or ALNet) with a classification head."""

    backbone: str = Field("resnet50", description="Any timm model name, or `alnet`.")
    head: str = Field("linear", description="Head: linear, dense512 or dense_dropout.")
    head_hidden: int = Field(512, ge=1, description="Hidden units of dense heads.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the last layer.")
    pretrained: bool = Field(False, description="Start from ImageNet weights (offline).")
    pre_logits: bool = Field(
        True,
        description="Keep the backbone's pre-logits layers where timm has them (VGG: fc6/fc7, "
        "a 4096-wide MLP, pretrained). false pools the last convolutional features instead "
        "(VGG-16: 512), as Keras' networks without their top do (the main study); backbones "
        "without pre-logits layers are unchanged.",
    )
    pretrained_path: LocalPath | None = Field(
        None, description="A safetensors or timm checkpoint file with the backbone's weights."
    )


# --------------------------------------------------------------------------------- optimizer


class OptimizerConfig(StrictModel):
    """The optimizer; defaults are the main study's Adamax."""

    name: str = Field("adamax", description="adamax, adam, adamw, rmsprop or sgd.")
    lr: float = Field(2e-4, gt=0.0, description="Initial learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam-family betas.")
    eps: float = Field(1e-8, gt=0.0, description="Numerical epsilon.")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 penalty / decoupled decay.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD / RMSprop momentum.")
    alpha: float = Field(0.9, gt=0.0, lt=1.0, description="RMSprop smoothing (Keras: rho=0.9).")

    @model_validator(mode="after")
    def _betas(self) -> OptimizerConfig:
        for b in self.betas:
            if not 0.0 <= b < 1.0:
                raise ValueError(f"`0 <= beta < 1` must hold, got betas={list(self.betas)}")
        return self


class ScheduleConfig(StrictModel):
    """The learning-rate schedule; defaults are the main study's cyclic triangular2."""

    name: str = Field("cyclic", description="cyclic, exponential, cosine or constant.")
    mode: Literal["triangular", "triangular2", "exp_range"] = Field(
        "triangular2", description="CyclicLR mode."
    )
    base_lr: float = Field(1e-7, gt=0.0, description="Cyclic lower bound.")
    max_lr: float = Field(2e-3, gt=0.0, description="Cyclic upper bound.")
    half_cycle_epochs: float = Field(
        6.0, gt=0.0, description="Cyclic half-cycle in epochs (step_size_up = this x iters/epoch)."
    )
    gamma: float = Field(
        0.95, gt=0.0, le=1.0, description="exp_range decay per step; exponential decay factor."
    )
    decay_steps: int = Field(900, ge=1, description="Exponential: multiply by gamma every N steps.")
    min_lr: float = Field(0.0, ge=0.0, description="Cosine floor.")

    @model_validator(mode="after")
    def _bounds(self) -> ScheduleConfig:
        if self.name == "cyclic" and self.base_lr >= self.max_lr:
            raise ValueError(
                f"`base_lr < max_lr` must hold, got base_lr={self.base_lr}, "
                f"max_lr={self.max_lr}: swap them or raise schedule.max_lr"
            )
        return self


class LossConfig(StrictModel):
    """Cross-entropy options."""

    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing.")
    class_weights: Literal["balanced"] | list[float] | None = Field(
        None, description="null, `balanced` (inverse class frequency) or one weight per class."
    )


class TrainConfig(StrictModel):
    """The loop: epochs, device, precision, checkpoint selection."""

    epochs: int = Field(10, ge=1, description="Training epochs.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="auto: CUDA when usable, else the CPU - but a trial given a GPU (by Ray, "
        "CUDA_VISIBLE_DEVICES) that cannot use CUDA fails at once saying why, as cuda does; "
        "cpu: always the CPU.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Training autocast. auto: bf16 on GPUs with native bf16 (Ampere and "
        "newer), else fp16 with a GradScaler (T4, V100 only emulate bf16), fp32 on the CPU. "
        "Validation and stored predictions are always fp32 (no TF32).",
    )
    channels_last: bool = Field(True, description="Channels-last memory format on CUDA.")
    threads: int | None = Field(
        None, ge=1, description="CPU threads (default: the trial's CPU allotment)."
    )
    select_metric: Literal["wfs", "acc", "ba", "auc", "kappa", "f1", "loss"] = Field(
        "wfs", description="Validation metric that picks the best epoch."
    )
    checkpoint_every: int = Field(1, ge=1, description="Write a checkpoint every N epochs.")
    keep_checkpoints: int = Field(2, ge=1, description="Latest checkpoints kept (best is kept).")
    deterministic: bool = Field(True, description="Deterministic algorithms (CPU runs repeat).")
    snapshots: bool = Field(
        True,
        description=(
            "At every learning-rate cycle's trough (cyclic schedules), write the weights' "
            "val/test predictions as a snapshot (predictions/snapshots/<trial>@e<epoch>.parquet) "
            "and keep its weights (models/<trial>@e<epoch>/ in a search), so `wen ensemble "
            "--candidates snapshots:...` can ensemble them; a trial a scheduler stops keeps "
            "the snapshots it reached."
        ),
    )
    max_steps_per_epoch: int | None = Field(
        None, ge=1, description="Cap batches per epoch (smoke runs)."
    )


class TrialConfig(StrictModel):
    """Everything one trial needs. ``wen train CONFIG`` reads this part of a config file."""

    name: str = Field("wen", description="Run name.")
    seed: int = Field(0, ge=0, description="Seed of weights, sampling and augmentation.")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def trial_part(self) -> TrialConfig:
        """The trial's own fields, without sections a subclass adds."""
        return TrialConfig.model_validate(
            self.model_dump(include=set(TrialConfig.model_fields), mode="json")
        )


# ------------------------------------------------------------------------------- validation


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Walk ``loc`` (without its last element) through nested models; return allowed keys."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _unwrap_model(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return None


def _unwrap_model(annotation: Any) -> Any:
    """``SyntheticSpec | None`` -> ``SyntheticSpec``; anything else unchanged."""
    args = getattr(annotation, "__args__", None)
    if args:
        for a in args:
            if isinstance(a, type) and issubclass(a, BaseModel):
                return a
    return annotation


def format_validation_error(err: ValidationError, model: type[BaseModel]) -> list[str]:
    """Turn pydantic's errors into one line each: key path, rule, value, fix."""
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # pydantic puts union branch names (e.g. 'literal['balanced']') into loc; drop them
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in {"list"})))
        key = ".".join(str(p) for p in loc) or "(top level)"
        kind = e["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, loc) or []
            problems.append(
                f"{key}: unknown key; allowed keys here: {', '.join(allowed)} "
                "(check the spelling or remove it)"
            )
        elif kind == "missing":
            problems.append(f"{key}: required key is missing; add it")
        elif kind == "value_error":
            msg = str(e.get("ctx", {}).get("error", e["msg"]))
            problems.append(f"{key}: {msg}" if loc else msg)
        else:
            value = e.get("input")
            shown = repr(value) if not isinstance(value, dict) else "{…}"
            problems.append(f"{key}: {e['msg']}, got {shown}; fix the value")
    return problems


# --------------------------------------------------------------------------------- loading


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a.b": 1, "c": ["x", "y"]}``; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError([f"--set {item!r}: expected KEY=VALUE, for example train.epochs=3"])
        key, _, raw = item.partition("=")
        key = key.strip()
        if not key:
            raise ConfigError([f"--set {item!r}: the key before '=' is empty"])
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError([f"--set {item!r}: value is not valid YAML ({exc})"]) from None
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); intermediate dicts are created as needed."""
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(
                    [f"--set {dotted}: {'.'.join(parts[: i + 1])} is a value, not a section"]
                )
            node = nxt
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"config file {str(p)!r} does not exist; pass a YAML file"])
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"{p}: not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(
            [f"{p}: the top level must be a mapping of keys, got {type(raw).__name__}"]
        )
    return raw


#: Further checks of a validated config: the problems found, one line each (empty when none).
ConfigChecks = Callable[[Any], list[str]]


def load_config(
    source: str | Path | dict[str, Any],
    overrides: dict[str, Any] | list[str] | None = None,
    model: type[TrialConfig] = TrialConfig,
    checks: ConfigChecks | None = None,
) -> TrialConfig:
    """Read, override and validate a config; raise one :class:`ConfigError` with every problem.

    ``checks`` runs on the validated config and returns further problems, raised in the same
    :class:`ConfigError`: ``trainers.checks.check_names`` (registry names, files), or the
    search stage's whole-run checks. This module stays a leaf (it imports no registry), so
    whoever loads at the edge says which checks apply.

    >>> cfg = load_config({"data": {"synthetic": {"size": 64}}}, ["train.epochs=2"])
    >>> cfg.train.epochs, cfg.data.synthetic.size
    (2, 64)
    """
    label = str(source) if not isinstance(source, dict) else None
    raw = read_yaml(source) if not isinstance(source, dict) else source
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    raw = apply_overrides(raw, overrides or {})
    try:
        cfg = model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, model), label) from None
    problems = checks(cfg) if checks is not None else []
    if problems:
        raise ConfigError(problems, label)
    return cfg


def config_hash(config: BaseModel) -> str:
    """Short stable hash of a config's content (key order does not matter)."""
    blob = json.dumps(config.model_dump(mode="json"), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def save_config(config: BaseModel, path: str | Path) -> Path:
    """Write the resolved config as YAML next to a run's outputs."""
    return atomic_write_text(
        path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), what="config"
    )
