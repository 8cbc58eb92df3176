"""Grad-CAM of ensemble members and of the ensemble (the study's Figures 6-8).

The target layer of any network is found by one rule (:func:`find_gradcam_target`): run a
dummy image through the part of the network that computes the feature map -- timm's
``forward_features`` when the backbone has it, else the whole model (ALNet) -- with a forward
hook on every module, and take the module that *finished last* with a 4-D output. That is the
final feature map just before global pooling (or flattening): ``layer4`` of a ResNet, the
``features`` block of VGG/DenseNet, ``bn2`` of an EfficientNet, ALNet's last batch norm.
Hooks fire when a module returns, so a container that ends with the feature map wins over its
children; the result is the same tensor either way.

The ensemble's map is the weight-averaged member maps (weights from ``chosen.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainers.errors import WenError
from trainers.models import min_input_size
from trainers.trained import TrainedModelError, load_trained_model

__all__ = [
    "GradCamError",
    "GradCamTarget",
    "LoadedModel",
    "find_gradcam_target",
    "gradcam_maps",
    "gradcam_target_layer",
    "load_trial_model",
]

log = logging.getLogger("wen.reports")

_FALLBACK_SIZE = 224


class GradCamError(WenError, RuntimeError):
    """Grad-CAM cannot be computed for a model; the message says why and what to do."""


@dataclass
class GradCamTarget:
    """The layer Grad-CAM hooks, its dotted name, its output shape on the dummy input and
    whether that output is channels-last (N, H, W, C) as in some timm families."""

    layer: nn.Module
    name: str
    shape: tuple[int, ...]
    channels_last: bool

    def reshape_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """For pytorch_grad_cam: NHWC activations to NCHW; None when already NCHW."""
        if not self.channels_last:
            return None
        return lambda t: t.permute(0, 3, 1, 2)


def _feature_root(model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], Any], str]:
    """The module whose submodules are traced, the call that computes the feature map, and the
    dotted prefix of the root inside ``model``."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and hasattr(backbone, "forward_features"):
        return backbone, backbone.forward_features, "backbone."
    if hasattr(model, "forward_features"):
        return model, model.forward_features, ""
    return model, model, ""


def _default_size(model: nn.Module) -> int:
    """The timm default input size of the backbone (valid even for fixed-size models), else
    its measured minimum, else 224 (ALNet's and ImageNet's size)."""
    name = getattr(model, "name", None)
    if not isinstance(name, str) or name == "alnet":
        return _FALLBACK_SIZE
    import timm

    cfg = timm.get_pretrained_cfg(name) if timm.is_model(name) else None
    if cfg is not None and cfg.input_size:
        return int(cfg.input_size[-1])
    return int(min_input_size(name) or _FALLBACK_SIZE)


def find_gradcam_target(model: nn.Module, input_size: int | None = None) -> GradCamTarget:
    """The last module with a 4-D output in the feature pass of ``model`` (see module docs).

    ``input_size`` is the side of the dummy input (default: timm's default input size of a
    ``trainers.models.Classifier``'s backbone, else 224). A backbone whose feature pass does not
    end in a 4-D map (a vision transformer's tokens) raises :class:`GradCamError`. The model is put in eval mode for the pass
    and restored afterwards.
    """
    root, call, prefix = _feature_root(model)
    size = int(input_size or _default_size(model))
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    seen: list[tuple[str, nn.Module, tuple[int, ...]]] = []

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                seen.append((name, module, tuple(output.shape)))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in root.named_modules() if m is not root]
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            features = call(torch.zeros(1, 3, size, size, device=device, dtype=dtype))
    except Exception as exc:
        raise GradCamError(
            f"{type(model).__name__}: the dummy {size}x{size} input failed ({exc}); pass "
            "input_size= the size the model was trained at"
        ) from None
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    tokens = root is not model and not (isinstance(features, torch.Tensor) and features.ndim == 4)
    if tokens or not seen:
        raise GradCamError(
            f"{getattr(model, 'name', type(model).__name__)} produces no 4-D feature map (a "
            "vision transformer gives tokens): Grad-CAM here supports convolutional backbones"
        )
    name, layer, shape = seen[-1]
    channels = getattr(root, "num_features", None)
    channels_last = bool(channels and shape[-1] == channels and shape[1] != channels)
    return GradCamTarget(layer=layer, name=prefix + name, shape=shape, channels_last=channels_last)


def gradcam_target_layer(model: nn.Module, input_size: int | None = None) -> nn.Module:
    """The module Grad-CAM should hook in ``model`` (:func:`find_gradcam_target`'s layer).

    >>> from trainers.models import create_model
    >>> model = create_model("test_resnet", num_classes=2)
    >>> gradcam_target_layer(model, 48) is model.backbone.layer4
    True
    """
    return find_gradcam_target(model, input_size).layer


def gradcam_maps(
    model: nn.Module,
    inputs: torch.Tensor,
    classes: Sequence[int],
    target: GradCamTarget | None = None,
) -> np.ndarray:
    """Grad-CAM maps [N, H, W] in [0, 1] (pytorch_grad_cam), one per input, for ``classes``.

    ``inputs`` are normalised NCHW tensors as the model was trained on; maps have the inputs'
    spatial size.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if len(classes) != len(inputs):
        raise ValueError(f"one class per input needed, got {len(classes)} for {len(inputs)} inputs")
    target = target or find_gradcam_target(model, int(inputs.shape[-1]))
    training = model.training
    model.eval()
    try:
        with GradCAM(
            model=model, target_layers=[target.layer], reshape_transform=target.reshape_transform()
        ) as cam:
            maps = cam(
                input_tensor=inputs, targets=[ClassifierOutputTarget(int(c)) for c in classes]
            )
    finally:
        model.train(training)
    return np.nan_to_num(np.asarray(maps, dtype=np.float32))


# --------------------------------------------------------------------------- run members


@dataclass
class LoadedModel:
    """One trial's network rebuilt from ``RUN/models/<trial_id>/`` with what pre-processing needs."""

    trial_id: str
    backbone: str
    model: nn.Module
    crop: Any  # trainers.config.CropConfig
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    data_root: Path

    def tensor(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] images -> normalised float NCHW, as the trainer feeds them."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        param = next(iter(self.model.parameters()))
        return ((x - mean) / std).to(param.device)

    def image(self, sample_id: str) -> np.ndarray:
        """The sample's image pre-processed exactly as in training (``preprocess_image``)."""
        from trainers.data.cache import preprocess_image  # lazy: the image stack, only for Grad-CAM

        path = self.data_root / sample_id
        if not path.is_file():
            raise FileNotFoundError(
                f"image {path} (sample {sample_id!r}) is missing: Grad-CAM needs the dataset the "
                f"run was trained on at {self.data_root}"
            )
        return preprocess_image(path, self.crop, self.input_size)


def _data_root(data: Any) -> Path:
    if data.root is not None:
        return Path(data.root)
    from trainers.data import ensure_synthetic  # lazy: the data stack, only without data.root

    # deterministic for the spec: re-generated into the wen cache when absent
    return Path(ensure_synthetic(data.synthetic, data.synthetic_dir))


def load_trial_model(
    meta: dict[str, Any], weights: Path, device: str | torch.device = "cpu"
) -> LoadedModel:
    """Rebuild a trial's network (``trainers.trained.load_trained_model``: its ``config.json``
    as ``meta`` and ``model.safetensors``) with what Grad-CAM's pre-processing needs."""
    try:
        trained = load_trained_model(meta, weights, device)
    except TrainedModelError as exc:
        raise GradCamError(str(exc)) from None
    cfg = trained.config
    return LoadedModel(
        trial_id=trained.trial_id,
        backbone=trained.backbone,
        model=trained.model,
        crop=cfg.data.crop,
        input_size=cfg.data.input_size,
        mean=trained.mean,
        std=trained.std,
        data_root=_data_root(cfg.data),
    )


def resize_map(cam: np.ndarray, size: int) -> np.ndarray:
    """A [H, W] map resized to ``size`` x ``size`` (bilinear), so members of different input
    sizes can be averaged."""
    if cam.shape == (size, size):
        return cam
    t = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[None, None]
    out = torch.nn.functional.interpolate(
        t, size=(size, size), mode="bilinear", align_corners=False
    )
    return out[0, 0].numpy()
