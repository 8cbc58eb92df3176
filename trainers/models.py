"""Networks: any timm backbone plus a registered head, and ALNet from its published layer table.

Every model is a :class:`Classifier` (``backbone`` -> features, ``head`` -> logits), so Grad-CAM,
export and checkpoints see one structure.

>>> import torch
>>> model = create_model("test_resnet", num_classes=2, head="dense512")
>>> model(torch.zeros(1, 3, 48, 48)).shape
torch.Size([1, 2])
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainers._registry import Registry
from trainers.errors import WenError
from trainers.weights import NO_IMAGENET_WEIGHTS, fetch_command, weight_source

__all__ = [
    "ALNET_INPUT_SIZE",
    "HEADS",
    "Classifier",
    "PretrainedWeightsError",
    "backbone_problem",
    "create_alnet",
    "create_model",
    "min_input_size",
    "model_data_config",
    "read_state_dict",
]

HeadFactory = Callable[[int, int, int, float], nn.Module]
HEADS: Registry[HeadFactory] = Registry("head", key="model.head")

ALNET_INPUT_SIZE = 224
_PROBE_MAX = 1024  # largest input size probed when searching a backbone's minimum


class PretrainedWeightsError(WenError, RuntimeError):
    """Pretrained weights that cannot be found or do not fit the model."""


class Classifier(nn.Module):
    """``head(backbone(x))``; ``backbone`` returns pooled features of size ``num_features``.

    ``init_weights`` is the file the backbone's weights started from (None: random
    initialisation), so a trial can say which pretrained tensors it fine-tuned.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, num_features: int, name: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_features = num_features
        self.name = name
        self.init_weights: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


# ---------------------------------------------------------------------------------- heads


@HEADS.register("linear")
def _linear_head(in_features: int, num_classes: int, hidden: int, dropout: float) -> nn.Module:
    """The main study: the backbone's pooled features straight into a softmax layer."""
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(*layers, nn.Linear(in_features, num_classes))


@HEADS.register("dense512")
def _dense512_head(in_features: int, num_classes: int, hidden: int, dropout: float) -> nn.Module:
    """Fata et al.: dense 512 (ReLU) then the softmax layer; the width is the name, always 512."""
    layers: list[nn.Module] = [nn.Linear(in_features, 512), nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(512, num_classes))


@HEADS.register("dense_dropout")
def _dense_dropout_head(
    in_features: int, num_classes: int, hidden: int, dropout: float
) -> nn.Module:
    """Alim et al.: two dense (ReLU) + dropout blocks, ``hidden`` then ``hidden // 2`` units."""
    half = max(1, hidden // 2)
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, half),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(half, num_classes),
    )


# ---------------------------------------------------------------------------------- ALNet


def _keras_conv(cin: int, cout: int) -> nn.Conv2d:
    # Keras Conv2D defaults: "valid" padding, Glorot-uniform kernel, zero bias
    conv = nn.Conv2d(cin, cout, kernel_size=5, padding=0)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _keras_bn(channels: int) -> nn.BatchNorm2d:
    # Keras BatchNormalization: epsilon 1e-3, moving-average momentum 0.99 (= torch 0.01)
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


def create_alnet(num_classes: int = 2, dropout: float = 0.2) -> Classifier:
    """ALNet (Jawahar et al., 2022) exactly as its layer table, for 224x224x3 inputs.

    Every pooling is a 2x2 max-pool with stride 2, rounding down (Keras "valid"), which
    reproduces the table: 224 -conv5-> 220 -conv5-> 216 -pool-> 108 -pool-> 54 | -conv5-> 50
    -conv5-> 46 -pool-> 23 -pool-> 11 | -conv5-> 7 -pool-> 3, so 3x3x128 = 1152 features.
    The paper's 2-unit sigmoid output is trained here as 2 softmax logits with cross-entropy.
    """
    features = nn.Sequential(
        # cluster 1
        _keras_conv(3, 32), nn.ReLU(inplace=True),
        _keras_conv(32, 32), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.MaxPool2d(2), _keras_bn(32),
        # cluster 2
        _keras_conv(32, 64), nn.ReLU(inplace=True),
        _keras_conv(64, 64), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.MaxPool2d(2), _keras_bn(64),
        # cluster 3
        _keras_conv(64, 128), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), _keras_bn(128),
        nn.Flatten(),
    )  # fmt: skip
    n_features = 3 * 3 * 128
    head = nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(n_features, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )
    for layer in head:
        if isinstance(layer, nn.Linear):  # Keras Dense defaults
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return Classifier(features, head, n_features, "alnet")


# ------------------------------------------------------------------------------ pretrained


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a raw dict or a training checkpoint (``state_dict``/``model`` keys)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsError(
            f"{path}: expected a mapping of parameter names to tensors (a state_dict or a "
            "checkpoint holding one under 'state_dict' or 'model')"
        )
    return {str(k): v for k, v in obj.items()}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file, or a torch file read with ``weights_only=True``.

    Never unpickles arbitrary objects: a torch file holding anything but tensors and plain
    containers is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise PretrainedWeightsError(
                f"{path}: not a readable safetensors file: {exc}"
            ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise PretrainedWeightsError(
            f"{path}: cannot be read as a weights-only torch file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); convert it to safetensors"
        ) from None
    return _unwrap_state_dict(obj, path)


def shape_mismatches(
    own: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]
) -> list[str]:
    """How the tensor shapes in a file (``found``) differ from a model's (``own``): tensors
    with the wrong shape, missing and unexpected ones; empty when they fit.

    >>> shape_mismatches({"w": (2, 3)}, {"w": (3, 2), "b": (2,)})[1]
    "1 unexpected tensor(s), e.g. ['b']"
    """
    wrong = [
        f"{k} (file {found[k]}, model {own[k]})" for k in own if k in found and found[k] != own[k]
    ]
    missing = [k for k in own if k not in found]
    unexpected = [k for k in found if k not in own]
    parts = []
    if wrong:
        parts.append(f"{len(wrong)} tensor(s) with the wrong shape, e.g. {wrong[:3]}")
    if missing:
        parts.append(f"{len(missing)} missing tensor(s), e.g. {missing[:3]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[:3]}")
    return parts


def _strip(sd: dict[str, torch.Tensor], classifier: str | None) -> dict[str, torch.Tensor]:
    """Backbone tensors only: drop DDP/Classifier prefixes, our head and timm's classifier."""
    out = {}
    for key, value in sd.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if key.startswith("head.") and any(k.startswith("backbone.") for k in sd):
            continue  # our Classifier's own head
        if key.startswith("backbone."):
            key = key[len("backbone.") :]
        if classifier and (key.startswith(f"{classifier}.") or key == classifier):
            continue
        out[key] = value
    return out


def _load_backbone_weights(
    backbone: nn.Module, path: Path, name: str, classifier: str | None
) -> None:
    """Load ``path`` into ``backbone`` strictly: every tensor present, every shape equal."""
    sd = _strip(read_state_dict(path), classifier)
    parts = shape_mismatches(
        {k: tuple(v.shape) for k, v in backbone.state_dict().items()},
        {k: tuple(v.shape) for k, v in sd.items()},
    )
    if parts:
        raise PretrainedWeightsError(
            f"weights in {path} do not fit {name}: {'; '.join(parts)}; is the file for another "
            "model? Point model.pretrained_path at weights of this backbone"
        )
    backbone.load_state_dict(sd, strict=True)


def _resolve_weights(name: str, pretrained_path: str | Path | None) -> Path:
    """The file to start ``name`` from: ``pretrained_path``, else the cached timm weights."""
    if pretrained_path is not None:
        path = Path(pretrained_path)
        if not path.is_file():
            raise PretrainedWeightsError(
                f"model.pretrained_path: file {str(path)!r} does not exist; point it at a "
                "safetensors or timm checkpoint file"
            )
        return path
    if name in NO_IMAGENET_WEIGHTS:
        raise PretrainedWeightsError(
            f"{name} has no ImageNet weights: set model.pretrained=false, or set "
            f"model.pretrained_path to weights saved from an {name} run"
        )
    source = weight_source(name)
    found = source.cached() if source is not None else None
    if found is None:
        where = (
            "; ".join(source.places())
            if source
            else "timm knows no pretrained weights for this name"
        )
        raise PretrainedWeightsError(
            f"pretrained weights for {name} are not available offline (looked in: {where}), and "
            f"training never downloads. Either (1) download them once: `{fetch_command(name)}` "
            "(here, or on a machine with network access with the same HF_HOME / TORCH_HOME, then "
            "copy those folders here), or (2) set model.pretrained_path to a safetensors or timm "
            "checkpoint file of this backbone"
        )
    return found


def _load_error_parts(exc: BaseException) -> str:
    """torch's load_state_dict error, shortened: the kinds of mismatch with a few names each."""
    text = str(exc)
    parts = []
    for label, pattern in (
        ("missing", r"Missing key\(s\) in state_dict: (.*)"),
        ("unexpected", r"Unexpected key\(s\) in state_dict: (.*)"),
    ):
        match = re.search(pattern, text)
        if match:
            keys = re.findall(r'"([^"]+)"', match.group(1))
            parts.append(f"{len(keys)} {label} tensor(s), e.g. {keys[:3]}")
    sizes = re.findall(r"size mismatch for ([^:]+):", text)
    if sizes:
        parts.append(f"{len(sizes)} tensor(s) with the wrong shape, e.g. {sizes[:3]}")
    return "; ".join(parts) or f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _timm_converted(name: str, path: Path, as_stored: list[str]) -> nn.Module:
    """``name`` loaded by timm's own ``load_pretrained`` from ``path``: the model's
    ``pretrained_filter_fn`` converts other layouts (torchvision's VGG classifier into
    ``pre_logits``, DenseNet's ``norm.1`` keys). The model is built with the file's own head
    so timm loads strictly, then the head is removed. timm reads the file itself, safetensors
    or ``torch.load(weights_only=True)``, and nothing else: the ``file`` source wins over every
    download source in timm's ``_resolve_pretrained_source``.
    """
    import timm

    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    except Exception as exc:  # noqa: BLE001 - load_state_dict's RuntimeError, or a filter_fn's on a foreign file
        raise PretrainedWeightsError(
            f"weights in {path} do not fit {name}: {'; '.join(as_stored)}; timm's conversion for "
            f"{name} does not make them fit either ({_load_error_parts(exc)}); is the file for "
            "another model? Point model.pretrained_path at weights of this backbone"
        ) from None
    model.reset_classifier(0)
    return model


def _pretrained_backbone(name: str, path: Path) -> nn.Module:
    """timm backbone ``name`` (``num_classes=0``) starting from the weights in ``path``.

    A file holding the backbone's tensors as timm names them (timm's hub copies, our own
    checkpoints) loads strictly as it is; any other layout goes through timm's conversion.
    """
    import timm

    cfg = timm.get_pretrained_cfg(name)
    sd = _strip(read_state_dict(path), cfg.classifier if cfg is not None else None)
    own = {k: tuple(v.shape) for k, v in _probe_model(name).state_dict().items()}
    parts = shape_mismatches(own, {k: tuple(v.shape) for k, v in sd.items()})
    if parts:
        del sd
        return _timm_converted(name, path, parts)
    backbone = timm.create_model(name, pretrained=False, num_classes=0)
    backbone.load_state_dict(sd, strict=True)
    return backbone


# ------------------------------------------------------------------------------ factories


def drop_pre_logits(backbone: nn.Module) -> bool:
    """Replace a timm backbone's ``pre_logits`` block by the identity; True when it had one.

    timm's VGG applies fc6/fc7 (a ``ConvMlp``: 7x7 conv to 4096, then 1x1 to 4096) before its
    global pool; without them the pool sees the 512 channels of the last convolution, the
    features Keras' ``VGG16(include_top=False, pooling="avg")`` returns.
    """
    block = getattr(backbone, "pre_logits", None)
    if not isinstance(block, nn.Module) or not any(True for _ in block.parameters()):
        return False
    backbone.pre_logits = nn.Identity()
    if hasattr(backbone, "head_hidden_size"):
        backbone.head_hidden_size = backbone.num_features  # the pooled width is now this
    return True


def _feature_size(backbone: nn.Module) -> int:
    # timm: head_hidden_size is the pooled output width when num_classes=0 (VGG: 4096, not 512)
    size = getattr(backbone, "head_hidden_size", None) or getattr(backbone, "num_features", None)
    if not size:
        raise ValueError(f"cannot tell the feature width of {type(backbone).__name__}")
    return int(size)


def create_model(
    name: str,
    num_classes: int,
    *,
    head: str = "linear",
    head_hidden: int = 512,
    dropout: float = 0.0,
    pretrained: bool = False,
    pretrained_path: str | Path | None = None,
    pre_logits: bool = True,
) -> Classifier:
    """A :class:`Classifier`: timm backbone ``name`` (``num_classes=0``) plus head ``head``.

    ``pre_logits=False`` removes the backbone's pre-logits layers where timm has them (VGG's
    fc6/fc7 ``ConvMlp``), so the head sees the pooled last convolutional features, as a Keras
    network built with ``include_top=False, pooling="avg"`` gives them (:func:`drop_pre_logits`).

    ``name="alnet"`` builds ALNet from its layer table, head included (``head`` must stay
    ``linear``; ``dropout`` is ALNet's dropout). ``pretrained`` loads weights from the local
    cache (``wen weights fetch`` fills it), or from ``pretrained_path`` when given; nothing is
    ever downloaded: timm is only ever handed an explicit file. Files in timm's layout load
    strictly; others (torchvision's VGG and DenseNet files) go through timm's conversion.
    """
    if num_classes < 2:
        raise ValueError(f"`num_classes >= 2` must hold, got num_classes={num_classes}")
    head_factory = HEADS.get(head)
    if name == "alnet":
        if head != "linear":
            raise ValueError(
                f"alnet has the head from its layer table (flatten, dropout, dense 128, dense "
                f"{num_classes}), got model.head={head!r}: leave model.head at 'linear'"
            )
        model = create_alnet(num_classes, dropout)
        if pretrained or pretrained_path is not None:
            weights = _resolve_weights(name, pretrained_path)
            _load_backbone_weights(model.backbone, weights, name, classifier=None)
            model.init_weights = str(weights)
        return model
    problem = _unknown_name_problem(name)
    if problem:
        raise ValueError(problem)
    import timm

    weights = _resolve_weights(name, pretrained_path) if (pretrained or pretrained_path) else None
    if weights is not None:
        backbone = _pretrained_backbone(name, weights)
    else:
        backbone = timm.create_model(name, pretrained=False, num_classes=0)
    if not pre_logits:
        drop_pre_logits(backbone)
    width = _feature_size(backbone)
    model = Classifier(
        backbone, head_factory(width, num_classes, head_hidden, dropout), width, name
    )
    model.init_weights = str(weights) if weights is not None else None
    return model


# --------------------------------------------------------------------------- input checks


def _unknown_name_problem(name: str) -> str | None:
    import timm

    if name == "alnet" or timm.is_model(name):
        return None
    close = difflib.get_close_matches(name, timm.list_models() + ["alnet"], n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
    return f"model.backbone: unknown model {name!r} (not a timm model nor alnet); {hint}"


@functools.lru_cache(maxsize=8)
def _probe_model(name: str) -> nn.Module:
    """The backbone without weights, on the meta device where possible (no memory, no init)."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, num_classes=0).eval()
    except Exception:  # some models compute in __init__ and refuse meta tensors
        return timm.create_model(name, pretrained=False, num_classes=0).eval()


@functools.lru_cache(maxsize=256)
def _runs_at(name: str, size: int) -> tuple[bool, str]:
    """Whether the backbone's forward pass accepts a ``size`` x ``size`` input (shape check)."""
    model = _probe_model(name)
    device = next(iter(model.parameters()), torch.empty(0)).device
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, size, size, device=device))
    except Exception as exc:  # conv/pool raise RuntimeError, timm asserts, BN ValueError
        return False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return True, ""


def min_input_size(name: str, above: int = 1) -> int | None:
    """Smallest square input (> ``above`` - 1) the backbone runs at, by shape checks; None if none.

    Brackets by doubling from ``above``, then bisects (conv/pool nets fail below a threshold).
    """
    if name == "alnet":
        return ALNET_INPUT_SIZE
    lo = max(1, above)
    if _runs_at(name, lo)[0]:
        return lo
    hi = lo
    while True:  # invariant: fails at lo
        hi = min(hi * 2, _PROBE_MAX)
        if _runs_at(name, hi)[0]:
            break
        if hi >= _PROBE_MAX:
            return None
        lo = hi
    while hi - lo > 1:  # fails at lo, runs at hi
        mid = (lo + hi) // 2
        if _runs_at(name, mid)[0]:
            hi = mid
        else:
            lo = mid
    return hi


def backbone_problem(name: str, input_size: int) -> str | None:
    """None when backbone ``name`` runs at ``input_size`` px; else the rule, value and fix."""
    if name == "alnet":
        if input_size != ALNET_INPUT_SIZE:
            return (
                f"data.input_size: alnet's layer table is for {ALNET_INPUT_SIZE}x"
                f"{ALNET_INPUT_SIZE} inputs (its dense layer expects 3x3x128 features), got "
                f"input_size={input_size}: set data.input_size={ALNET_INPUT_SIZE}"
            )
        return None
    unknown = _unknown_name_problem(name)
    if unknown:
        return unknown
    import timm

    cfg = timm.get_pretrained_cfg(name)
    if cfg is not None and cfg.fixed_input_size and input_size != cfg.input_size[-1]:
        return (
            f"data.input_size: {name} needs inputs of exactly {cfg.input_size[-1]} px, got "
            f"input_size={input_size}: set data.input_size={cfg.input_size[-1]} or pick another backbone"
        )
    ok, error = _runs_at(name, input_size)
    if ok:
        return None
    smallest = min_input_size(name, above=input_size)
    if smallest is not None and smallest > input_size:
        return (
            f"data.input_size: {name} needs inputs of at least {smallest} px, got "
            f"input_size={input_size}: raise data.input_size or pick another backbone"
        )
    return f"data.input_size: {name} does not run at input_size={input_size} ({error}); pick another size"


def model_data_config(name: str) -> dict[str, Any]:
    """Normalisation the backbone was trained with: ``mean``, ``std``, ``interpolation``.

    ALNet sees [0, 1] inputs as they are (mean 0, std 1).
    """
    if name == "alnet":
        return {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "interpolation": "bilinear"}
    import timm
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    cfg = timm.get_pretrained_cfg(name)
    if cfg is None:
        return {
            "mean": IMAGENET_DEFAULT_MEAN,
            "std": IMAGENET_DEFAULT_STD,
            "interpolation": "bicubic",
        }
    return {
        "mean": tuple(float(v) for v in cfg.mean),
        "std": tuple(float(v) for v in cfg.std),
        "interpolation": cfg.interpolation or "bicubic",
    }
