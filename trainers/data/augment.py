"""Training-time augmentation presets, chosen by name (``data.augmentation``).

Each preset is a torchvision ``transforms.v2`` pipeline on one uint8 CHW tensor of side
``size`` and returns a uint8 tensor of the same shape. Inside, the geometric and colour steps
run on a PIL image (v2 dispatches to its PIL kernels): PIL's single-threaded C code is about
twice as fast as the tensor kernels on one 224 px image and, unlike them, does not slow down
when torch's intra-op threads compete with the trainer for the cores. Only steps PIL lacks
(random erasing) run on the tensor. Geometric transforms fill with black
(0) because the C-NMC cells sit on a black background, so a rotated or shifted image gains no
artificial border. Randomness comes from torch's global generator; the data loader seeds it
per sample, so a seed gives the same augmented images.

>>> import torch
>>> aug = create_augmentation("paper", 64)
>>> out = aug(torch.zeros(3, 64, 64, dtype=torch.uint8))
>>> out.shape, out.dtype
(torch.Size([3, 64, 64]), torch.uint8)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from trainers._registry import Registry

if TYPE_CHECKING:
    from torchvision.transforms.v2 import Transform

__all__ = ["AUGMENTATIONS", "Steps", "create_augmentation"]


class Steps(NamedTuple):
    """A preset's transforms: ``pil`` run on a PIL image, then ``tensor`` on the uint8 tensor."""

    pil: list[Transform]
    tensor: tuple[Transform, ...] = ()


#: name -> ``(size) -> Steps``
AUGMENTATIONS: Registry[Callable[[int], Steps]] = Registry(
    "augmentation preset", key="data.augmentation"
)


def _affine(degrees: float, translate: float | None, scale: tuple[float, float]) -> Transform:
    from torchvision.transforms import v2

    return v2.RandomAffine(
        degrees=degrees,
        translate=(translate, translate) if translate else None,
        scale=scale,
        interpolation=v2.InterpolationMode.BILINEAR,
        fill=0,
    )


@AUGMENTATIONS.register("none")
def _none(size: int) -> Steps:
    """No augmentation: the image as pre-processed (evaluation-like training)."""
    return Steps([])


@AUGMENTATIONS.register("paper")
def _paper(size: int) -> Steps:
    """The main study (Mondal et al., 2021): horizontal and vertical flips, rotation, zoom, shift.

    Flips with p=0.5 each; one affine draw of rotation in [-25, 25] degrees, shift up to 10% of
    the side and zoom in [0.9, 1.1], bilinear, black fill. The study names the operations but not
    their ranges; these are the usual Keras ``ImageDataGenerator`` settings for such work.
    """
    from torchvision.transforms import v2

    return Steps(
        [
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomVerticalFlip(p=0.5),
            _affine(degrees=25.0, translate=0.1, scale=(0.9, 1.1)),
        ]
    )


@AUGMENTATIONS.register("strong")
def _strong(size: int) -> Steps:
    """``paper`` plus colour / stain jitter and random erasing (this project's stronger variant).

    Stain intensity and hue differ between slides and staining batches; ColorJitter (brightness
    0.25, contrast 0.25, saturation 0.25, hue 0.04) imitates that, and RandomErasing (p=0.25,
    2-15% of the area, black) teaches the model not to rely on one region of the cell.
    """
    from torchvision.transforms import v2

    return Steps(
        [
            *_paper(size).pil,
            v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.04),
        ],
        (v2.RandomErasing(p=0.25, scale=(0.02, 0.15), ratio=(0.3, 3.3), value=0),),
    )


@AUGMENTATIONS.register("fata2023")
def _fata2023(size: int) -> Steps:
    """Fata et al., 2023 (VGG16/ResNet50, Adam vs RMSprop): mild flips, rotation and zoom.

    The study does not list its augmentation; its Keras pipeline implies the common mild
    settings, so this preset uses a horizontal flip (p=0.5), rotation in [-10, 10] degrees and
    zoom in [0.9, 1.1], with no shift and no colour change.
    """
    from torchvision.transforms import v2

    return Steps(
        [v2.RandomHorizontalFlip(p=0.5), _affine(degrees=10.0, translate=None, scale=(0.9, 1.1))]
    )


@AUGMENTATIONS.register("alim2024")
def _alim2024(size: int) -> Steps:
    """Alim et al., 2024 (ResNet-50, four B-ALL classes): flips, rotation and zoom.

    The study names the operations, not their ranges: horizontal and vertical flips (p=0.5
    each), rotation in [-20, 20] degrees and zoom in [0.8, 1.2], no shift and no colour change.
    """
    from torchvision.transforms import v2

    return Steps(
        [
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomVerticalFlip(p=0.5),
            _affine(degrees=20.0, translate=None, scale=(0.8, 1.2)),
        ]
    )


@AUGMENTATIONS.register("jawahar2022")
def _jawahar2022(size: int) -> Steps:
    """Jawahar et al., 2022 (ALNet): 15-degree rotation, horizontal flip, zoom, random contrast.

    Rotation in [-15, 15] degrees, horizontal flip (p=0.5), zoom in [0.9, 1.1] and a contrast
    factor in [0.8, 1.2] (Keras ``RandomContrast(0.2)``); the zoom range is not stated in the
    study, 10% is the usual Keras setting.
    """
    from torchvision.transforms import v2

    return Steps(
        [
            v2.RandomHorizontalFlip(p=0.5),
            _affine(degrees=15.0, translate=None, scale=(0.9, 1.1)),
            v2.ColorJitter(contrast=0.2),
        ]
    )


def create_augmentation(name: str, size: int) -> Transform:
    """The named preset as one v2 transform for uint8 CHW tensors of side ``size``.

    The pipeline ends with a resize to ``size`` x ``size`` (a no-op when the side already
    matches), so the output always has the model's input size. An unknown name raises an
    error listing the valid names.
    """
    from torchvision.transforms import v2

    if size < 1:
        raise ValueError(f"`size >= 1` must hold, got size={size}: pass data.input_size")
    steps = AUGMENTATIONS.get(name)(size)
    pipeline: list[Transform] = []
    if steps.pil:
        pipeline += [v2.ToPILImage(), *steps.pil, v2.PILToTensor()]
    pipeline += steps.tensor
    pipeline.append(
        v2.Resize((size, size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    )
    return v2.Compose(pipeline)
