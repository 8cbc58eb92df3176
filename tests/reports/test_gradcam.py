"""The Grad-CAM target-layer rule on every family the project uses, and the maps it gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reports import GradCamError, find_gradcam_target, gradcam_maps, gradcam_target_layer
from trainers.models import create_model, min_input_size


def _maps_at(model: torch.nn.Module, size: int) -> np.ndarray:
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    return gradcam_maps(model, x, [0, 1], find_gradcam_target(model, size))


@pytest.mark.parametrize(
    ("name", "layer"),
    [("test_resnet", "layer4"), ("test_efficientnet", "bn2")],
)
def test_tiny_timm_backbones(name: str, layer: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=2)
    target = find_gradcam_target(model, 64)
    assert target.layer is getattr(model.backbone, layer)
    assert target.name == f"backbone.{layer}"
    assert target.shape[1] == model.backbone.num_features and len(target.shape) == 4
    assert not target.channels_last
    maps = _maps_at(model, 64)
    assert maps.shape == (2, 64, 64)
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert maps.std() > 0, "a 2x2 feature map must give a map that varies over the image"
    assert model.training, "the trace must restore the model's train/eval mode"


def test_alnet_uses_its_last_feature_map() -> None:
    model = create_model("alnet", num_classes=2)
    target = find_gradcam_target(model)  # default 224, ALNet's only size
    last_bn = [m for m in model.backbone if isinstance(m, torch.nn.BatchNorm2d)][-1]
    assert target.layer is last_bn
    assert target.shape == (1, 128, 3, 3)
    maps = gradcam_maps(model, torch.randn(1, 3, 224, 224), [1], target)
    assert maps.shape == (1, 224, 224)


def test_channels_last_family_gets_a_permute() -> None:
    model = create_model("test_mambaout", num_classes=2)
    target = find_gradcam_target(model, 64)
    assert target.channels_last and target.shape[-1] == model.backbone.num_features
    maps = gradcam_maps(model, torch.randn(1, 3, 64, 64), [0], target)
    assert maps.shape == (1, 64, 64) and np.isfinite(maps).all()


def test_transformer_tokens_are_refused() -> None:
    model = create_model("test_vit", num_classes=2)
    with pytest.raises(GradCamError, match="no 4-D feature map"):
        gradcam_target_layer(model)


def test_one_class_per_input() -> None:
    model = create_model("test_resnet", num_classes=2)
    with pytest.raises(ValueError, match="one class per input"):
        gradcam_maps(model, torch.randn(2, 3, 32, 32), [0])


STUDY = {
    "vgg16": "features",
    "legacy_xception": "act4",
    "mobilenetv1_100": "bn2",
    "inception_resnet_v2": "conv2d_7b",
    "densenet121": "features",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STUDY))
def test_study_backbones_at_their_minimum_size(name: str) -> None:
    """The study's five networks (no weights), each at the smallest input it accepts."""
    model = create_model(name, num_classes=2, pretrained=False)
    size = min_input_size(name)
    assert size is not None
    target = find_gradcam_target(model, size)
    assert target.layer is getattr(model.backbone, STUDY[name])
    assert target.shape[1] == model.backbone.num_features
    maps = gradcam_maps(model, torch.randn(1, 3, size, size), [1], target)
    assert maps.shape == (1, size, size) and np.isfinite(maps).all()
