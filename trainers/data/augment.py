"""Training-time augmentation presets, chosen by name (``data.augmentation``): one spec each.

A preset is ONE :class:`AugmentSpec` - the ranges of its random steps (flip probabilities,
rotation, shift, zoom, colour jitter, blur, erasing) - and two builders read it:

* :func:`create_augmentation` (here): a torchvision ``transforms.v2`` pipeline on one uint8
  CHW image, run per image inside the DataLoader (``data.augment_on: loader``);
* :func:`trainers.data.batch_augment.create_batch_augmentation`: Kornia's batched transforms
  on a whole batch on the training device, each image with its own random draws
  (``data.augment_on: device``).

So a range is written once, and ``tests/trainers/data/test_augment_paths.py`` checks that the
two paths draw their parameters from the same distributions.

In the per-image pipeline the geometric and colour steps run on a PIL image (v2 dispatches to
its PIL kernels): PIL's single-threaded C code is about twice as fast as the tensor kernels on
one 224 px image and, unlike them, does not slow down when torch's intra-op threads compete
with the trainer for the cores. Only steps PIL lacks (random erasing) run on the tensor.
Geometric transforms fill with black (0) because the C-NMC cells sit on a black background, so
a rotated or shifted image gains no artificial border. Randomness comes from torch's global
generator; the data loader seeds it per sample, so a seed gives the same augmented images.

>>> import torch
>>> aug = create_augmentation("paper", 64)
>>> out = aug(torch.zeros(3, 64, 64, dtype=torch.uint8))
>>> out.shape, out.dtype
(torch.Size([3, 64, 64]), torch.uint8)
>>> preset_spec("paper").degrees
25.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from trainers._registry import Registry

if TYPE_CHECKING:
    from torchvision.transforms.v2 import Transform

__all__ = [
    "AUGMENTATIONS",
    "AugmentSpec",
    "blur_kernel_size",
    "create_augmentation",
    "preset_spec",
]


@dataclass(frozen=True)
class AugmentSpec:
    """The ranges of one preset's random steps, read by both augmentation paths.

    ``hflip``/``vflip`` are flip probabilities. One affine draw per image (when ``degrees``,
    ``translate`` or ``scale`` is set): rotation uniform in ``[-degrees, degrees]``, shift
    uniform in ``[-translate, translate]`` of the side, zoom uniform in ``scale``, bilinear,
    black fill. Colour factors are uniform in ``[1 - x, 1 + x]`` (``hue``: a shift uniform in
    ``[-hue, hue]`` of a turn), torchvision's ``ColorJitter`` formulas. ``erase_p`` is the
    chance of blacking out one box covering ``erase_scale`` of the area, aspect ratio
    log-uniform in ``erase_ratio`` (torchvision's ``RandomErasing``). ``blur``: a Gaussian blur
    after the colour step, its SD uniform in ``blur`` pixels (of the model's input), kernel side
    :func:`blur_kernel_size`, reflected borders (torchvision's ``GaussianBlur``); ``(0, 0)``: none.

    >>> AugmentSpec(hflip=0.5).geometric, AugmentSpec(hflip=0.5).affine
    (True, False)
    """

    hflip: float = 0.0
    vflip: float = 0.0
    degrees: float = 0.0
    translate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    erase_p: float = 0.0
    erase_scale: tuple[float, float] = (0.02, 0.15)
    erase_ratio: tuple[float, float] = (0.3, 3.3)
    blur: tuple[float, float] = (0.0, 0.0)

    @property
    def affine(self) -> bool:
        """Whether the preset rotates, shifts or zooms."""
        return bool(self.degrees or self.translate or tuple(self.scale) != (1.0, 1.0))

    @property
    def geometric(self) -> bool:
        """Whether the preset moves pixels at all (flips included)."""
        return bool(self.hflip or self.vflip or self.affine)

    @property
    def colour(self) -> bool:
        """Whether the preset jitters colours."""
        return bool(self.brightness or self.contrast or self.saturation or self.hue)

    @property
    def blurs(self) -> bool:
        """Whether the preset blurs."""
        return max(self.blur) > 0.0


def blur_kernel_size(spec: AugmentSpec) -> int:
    """Side of the blur kernel: odd, covering three SDs of the widest blur on each side.

    >>> blur_kernel_size(AugmentSpec(blur=(1.0, 2.0)))
    13
    """
    return 2 * math.ceil(3.0 * max(spec.blur)) + 1


#: name -> ``() -> AugmentSpec`` (the function's docstring says where the ranges come from)
AUGMENTATIONS: Registry[Callable[[], AugmentSpec]] = Registry(
    "augmentation preset", key="data.augmentation"
)


@AUGMENTATIONS.register("none")
def _none() -> AugmentSpec:
    """No augmentation: the image as pre-processed (evaluation-like training)."""
    return AugmentSpec()


@AUGMENTATIONS.register("paper")
def _paper() -> AugmentSpec:
    """The main study (Mondal et al., 2021): horizontal and vertical flips, rotation, zoom, shift.

    Flips with p=0.5 each; one affine draw of rotation in [-25, 25] degrees, shift up to 10% of
    the side and zoom in [0.9, 1.1], bilinear, black fill. The study names the operations but not
    their ranges; these are the usual Keras ``ImageDataGenerator`` settings for such work.
    """
    return AugmentSpec(hflip=0.5, vflip=0.5, degrees=25.0, translate=0.1, scale=(0.9, 1.1))


@AUGMENTATIONS.register("strong")
def _strong() -> AugmentSpec:
    """``paper`` plus colour / stain jitter and random erasing (this project's stronger variant).

    Stain intensity and hue differ between slides and staining batches; ColorJitter (brightness
    0.25, contrast 0.25, saturation 0.25, hue 0.04) imitates that, and RandomErasing (p=0.25,
    2-15% of the area, aspect ratio 0.3-3.3, black) teaches the model not to rely on one region
    of the cell.
    """
    return replace(_paper(), brightness=0.25, contrast=0.25, saturation=0.25, hue=0.04,
                   erase_p=0.25, erase_scale=(0.02, 0.15), erase_ratio=(0.3, 3.3))  # fmt: skip


@AUGMENTATIONS.register("fata2023")
def _fata2023() -> AugmentSpec:
    """Fata et al., 2023 (VGG16/ResNet50, Adam vs RMSprop): mild flips, rotation and zoom.

    The study does not list its augmentation; its Keras pipeline implies the common mild
    settings, so this preset uses a horizontal flip (p=0.5), rotation in [-10, 10] degrees and
    zoom in [0.9, 1.1], with no shift and no colour change.
    """
    return AugmentSpec(hflip=0.5, degrees=10.0, scale=(0.9, 1.1))


@AUGMENTATIONS.register("alim2024")
def _alim2024() -> AugmentSpec:
    """Alim et al., 2024 (ResNet-50, four B-ALL classes): flips, rotation and zoom.

    The study names the operations, not their ranges: horizontal and vertical flips (p=0.5
    each), rotation in [-20, 20] degrees and zoom in [0.8, 1.2], no shift and no colour change.
    """
    return AugmentSpec(hflip=0.5, vflip=0.5, degrees=20.0, scale=(0.8, 1.2))


@AUGMENTATIONS.register("jawahar2022")
def _jawahar2022() -> AugmentSpec:
    """Jawahar et al., 2022 (ALNet): 15-degree rotation, horizontal flip, zoom, random contrast.

    Rotation in [-15, 15] degrees, horizontal flip (p=0.5), zoom in [0.9, 1.1] and a contrast
    factor in [0.8, 1.2] (Keras ``RandomContrast(0.2)``); the zoom range is not stated in the
    study, 10% is the usual Keras setting.
    """
    return AugmentSpec(hflip=0.5, degrees=15.0, scale=(0.9, 1.1), contrast=0.2)


@AUGMENTATIONS.register("stain-jitter")
def _stain_jitter() -> AugmentSpec:
    """Flips plus a hue jitter of up to 0.3 turn either way: destroys a colour (stain) cue.

    Far more than slides differ, on purpose: the synthetic ``complementary`` preset's ``stain``
    cue rotates the whole cell's hue by 0.025 turn per within-class SD, so a model trained with
    this preset cannot use it and must rely on texture and shape. Only flips move pixels (no
    interpolation), and brightness, contrast and sharpness are left alone, so chromatin texture
    survives.
    """
    return AugmentSpec(hflip=0.5, vflip=0.5, hue=0.3)


@AUGMENTATIONS.register("brightness-jitter")
def _brightness_jitter() -> AugmentSpec:
    """Flips plus a brightness jitter, factors 0.4-1.6: destroys an intensity (density) cue.

    Far more than exposure differs between slides, on purpose: the synthetic
    ``complementary`` preset's ``density`` cue scales the whole cell's intensity by 7% per
    within-class SD (on black, so nothing in the image is a reference), so a model trained with
    this preset cannot use it and must rely on hue and shape. Hue, saturation and contrast are
    left alone, and only flips move pixels.
    """
    return AugmentSpec(hflip=0.5, vflip=0.5, brightness=0.6)


@AUGMENTATIONS.register("texture-blur")
def _texture_blur() -> AugmentSpec:
    """Flips plus a Gaussian blur of SD 1.2-2.4 pixels: destroys a fine-texture cue.

    The synthetic ``complementary`` preset's ``texture`` cue (the contrast of chromatin grain
    about 1 pixel wide at a 64 px input) is blurred away at these widths, and the random width
    leaves what remains uninformative; colour and the nucleus' share of the cell survive, so a
    model trained with this preset relies on those. Only flips move pixels.
    """
    return AugmentSpec(hflip=0.5, vflip=0.5, blur=(1.2, 2.4))


def preset_spec(name: str) -> AugmentSpec:
    """The named preset's spec; an unknown name raises an error listing the valid names."""
    return AUGMENTATIONS.get(name)()


# ------------------------------------------------------------------ the per-image builder


def pil_steps(spec: AugmentSpec) -> list[Transform]:
    """The steps of ``spec`` that run on a PIL image: flips, the affine draw, colour, blur.

    torchvision blurs a PIL image through its tensor kernel (and back), exactly as a tensor.
    """
    from torchvision.transforms import v2

    steps: list[Transform] = []
    if spec.hflip:
        steps.append(v2.RandomHorizontalFlip(p=spec.hflip))
    if spec.vflip:
        steps.append(v2.RandomVerticalFlip(p=spec.vflip))
    if spec.affine:
        steps.append(v2.RandomAffine(
            degrees=spec.degrees,
            translate=(spec.translate, spec.translate) if spec.translate else None,
            scale=tuple(spec.scale),
            interpolation=v2.InterpolationMode.BILINEAR,
            fill=0,
        ))  # fmt: skip
    if spec.colour:
        steps.append(v2.ColorJitter(brightness=spec.brightness or None,
                                    contrast=spec.contrast or None,
                                    saturation=spec.saturation or None,
                                    hue=spec.hue or None))  # fmt: skip
    if spec.blurs:
        size = blur_kernel_size(spec)
        steps.append(v2.GaussianBlur(kernel_size=size, sigma=tuple(spec.blur)))
    return steps


def tensor_steps(spec: AugmentSpec) -> list[Transform]:
    """The steps of ``spec`` PIL lacks, run on the uint8 tensor: random erasing."""
    from torchvision.transforms import v2

    if not spec.erase_p:
        return []
    return [v2.RandomErasing(p=spec.erase_p, scale=tuple(spec.erase_scale),
                             ratio=tuple(spec.erase_ratio), value=0)]  # fmt: skip


def create_augmentation(name: str, size: int) -> Transform:
    """The named preset as one v2 transform for uint8 CHW tensors of side ``size``.

    The pipeline ends with a resize to ``size`` x ``size`` (a no-op when the side already
    matches), so the output always has the model's input size. An unknown name raises an
    error listing the valid names.
    """
    from torchvision.transforms import v2

    if size < 1:
        raise ValueError(f"`size >= 1` must hold, got size={size}: pass data.input_size")
    spec = preset_spec(name)
    pipeline: list[Transform] = []
    pil = pil_steps(spec)
    if pil:
        pipeline += [v2.ToPILImage(), *pil, v2.PILToTensor()]
    pipeline += tensor_steps(spec)
    pipeline.append(
        v2.Resize((size, size), interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    )
    return v2.Compose(pipeline)
