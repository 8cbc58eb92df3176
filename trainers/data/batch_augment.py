"""Batched augmentation on the training device, with random parameters per sample.

The presets of :mod:`trainers.data.augment` (one :class:`~trainers.data.augment.AugmentSpec`
each) run per image inside the data loader, where augmenting costs more than reading the
decoded-image cache. This module builds the same spec into Kornia's batched transforms
(``kornia.augmentation``), which draw one set of parameters per image and run on whatever
device the batch is on, so the loader only slices bytes out of the cache and the GPU does the
arithmetic (``data.augment_on: device``).

What each spec field becomes, and where it differs from the per-image torchvision path:

* flips: ``RandomHorizontalFlip`` / ``RandomVerticalFlip`` with the spec's probabilities;
* rotation, shift, zoom: ONE ``RandomAffine`` draw per image (``p=1``, bilinear, zeros
  padding = black fill, ``align_corners=False``). torchvision rounds the shift to whole pixels,
  Kornia does not: the shift's distribution is continuous instead of on the integers;
* colour: Kornia's ``ColorJitter``, which uses torchvision's formulas (brightness multiplies,
  contrast blends with the mean grey, saturation with the grey image, hue shifts H in HSV by
  ``factor`` turns). Each image gets its own factors; the order of the four steps is drawn once
  per batch, torchvision draws it per image;
* blur: ``RandomGaussianBlur`` (``p=1``) with the spec's SD range, one SD per image, the same
  kernel side (:func:`~trainers.data.augment.blur_kernel_size`) and reflected borders as
  torchvision's ``GaussianBlur``; the same SD gives the same image up to rounding;
* random erasing stays hand-written (:class:`RandomErase`): Kornia's ``RandomErasing`` draws
  the aspect ratio uniformly on ``[r0, 1]`` or ``[1, r1]`` with even odds
  (``kornia/augmentation/random_generator/_2d/rectangle_earase.py``), torchvision
  log-uniformly on ``[r0, r1]`` (``torchvision/transforms/v2/_augment.py``,
  ``RandomErasing.make_params``), so Kornia's boxes have another shape distribution.

Every random number comes from the ``generator`` passed in (a CPU generator): a call draws one
seed from it and runs Kornia's samplers (which draw on the CPU from torch's default generator)
under that seed, restoring the default generator's state afterwards. So a seed gives the same
batches on any device up to floating-point rounding, and exactly the same on the CPU.

>>> import torch
>>> aug = create_batch_augmentation("paper")
>>> out = aug(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.Generator().manual_seed(0))
>>> out.shape, out.dtype
(torch.Size([4, 3, 32, 32]), torch.float32)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from trainers.data.augment import AUGMENTATIONS, AugmentSpec, blur_kernel_size, preset_spec

if TYPE_CHECKING:
    from trainers._registry import Registry

__all__ = ["BATCH_AUGMENTATIONS", "BatchAugment", "RandomErase", "create_batch_augmentation"]

#: the presets: the same registry as ``trainers.data.augment.AUGMENTATIONS`` (one spec each)
BATCH_AUGMENTATIONS: Registry[Callable[[], AugmentSpec]] = AUGMENTATIONS


class RandomErase(nn.Module):
    """torchvision's ``RandomErasing`` for a batch: per image, with probability ``p``, one box.

    The box covers ``scale`` of the area (uniform) with aspect ratio ``h / w`` log-uniform in
    ``ratio``; ``h = round(sqrt(area * ratio))``, ``w = round(sqrt(area / ratio))``, its corner
    uniform over the positions where it fits, filled with 0. torchvision retries a box that does
    not fit up to 10 times; with the presets' ranges (area <= 15%, ratio <= 3.3) every box fits
    (its longer side is at most 0.70 of the side), so no retry is needed. Parameters are drawn
    on the CPU from torch's default generator, like Kornia's.
    """

    def __init__(self, p: float, scale: tuple[float, float], ratio: tuple[float, float]) -> None:
        super().__init__()
        self.p, self.scale, self.ratio = p, tuple(scale), tuple(ratio)

    def params(self, batch: int, height: int, width: int) -> dict[str, torch.Tensor]:
        """``apply`` (bool), ``top``, ``left``, ``h``, ``w`` per image (CPU tensors)."""
        u = torch.rand(batch, 5)
        lo, hi = self.scale
        area = (lo + (hi - lo) * u[:, 0]) * (height * width)
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
        h = torch.sqrt(area * ratio).round().clamp(1, height)
        w = torch.sqrt(area / ratio).round().clamp(1, width)
        top = torch.floor(u[:, 2] * (height - h + 1))
        left = torch.floor(u[:, 3] * (width - w + 1))
        return {"apply": u[:, 4] < self.p, "top": top, "left": left, "h": h, "w": w}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        p = {
            k: v.to(x.device).view(-1, 1, 1) for k, v in self.params(len(x), height, width).items()
        }
        rows = torch.arange(height, device=x.device).view(1, -1, 1)
        cols = torch.arange(width, device=x.device).view(1, 1, -1)
        inside = ((rows >= p["top"]) & (rows < p["top"] + p["h"])
                  & (cols >= p["left"]) & (cols < p["left"] + p["w"]) & p["apply"])  # fmt: skip
        return x.masked_fill(inside.unsqueeze(1), 0.0)


def kornia_steps(spec: AugmentSpec) -> list[nn.Module]:
    """The batched steps of ``spec``, in the per-image path's order."""
    import kornia.augmentation as K

    steps: list[nn.Module] = []
    if spec.hflip:
        steps.append(K.RandomHorizontalFlip(p=spec.hflip))
    if spec.vflip:
        steps.append(K.RandomVerticalFlip(p=spec.vflip))
    if spec.affine:
        steps.append(K.RandomAffine(
            degrees=spec.degrees,
            translate=(spec.translate, spec.translate) if spec.translate else None,
            scale=tuple(spec.scale),
            resample="bilinear", padding_mode="zeros", align_corners=False, p=1.0,
        ))  # fmt: skip
    if spec.colour:
        steps.append(K.ColorJitter(brightness=spec.brightness, contrast=spec.contrast,
                                   saturation=spec.saturation, hue=spec.hue, p=1.0))  # fmt: skip
    if spec.blurs:
        size = blur_kernel_size(spec)
        steps.append(K.RandomGaussianBlur((size, size), tuple(spec.blur), border_type="reflect",
                                          p=1.0))  # fmt: skip
    if spec.erase_p:
        steps.append(RandomErase(spec.erase_p, spec.erase_scale, spec.erase_ratio))
    return steps


class BatchAugment:
    """A preset for whole batches: ``aug(images [B, 3, H, W], generator) -> float [0, 1]``.

    Integer input is read as 0-255, float input as 0-1; the result is float32 in [0, 1], of the
    input's shape, on its device. ``generator`` must be a CPU generator (see the module doc).

    >>> flip = BatchAugment("flip", AugmentSpec(hflip=1.0))
    >>> x = torch.arange(4, dtype=torch.uint8).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    >>> (flip(x, torch.Generator()) * 255).round()[0, 0, 0].tolist()
    [3.0, 2.0, 1.0, 0.0]
    """

    def __init__(self, name: str, spec: AugmentSpec) -> None:
        self.name = name
        self.spec = spec
        self.steps = kornia_steps(spec)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"batch augmentation {self.name!r} needs images of shape [B, 3, H, W], got "
                f"{tuple(images.shape)}: pass a batch of RGB images (add a batch dimension)"
            )
        if generator.device.type != "cpu":
            raise ValueError(
                f"batch augmentation {self.name!r} draws its parameters on the CPU, got a "
                f"generator on {generator.device}: pass torch.Generator() (CPU)"
            )
        # in place after the one copy: the conversion is a large share of the work on the CPU
        x = images.float() if images.is_floating_point() else images.float().mul_(1 / 255)
        if len(x) == 0 or not self.steps:
            return x
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        default = torch.default_generator
        state = default.get_state()
        default.manual_seed(seed)
        try:
            with torch.no_grad():
                for step in self.steps:
                    x = step(x)
        finally:
            default.set_state(state)
        return x


def create_batch_augmentation(name: str) -> BatchAugment:
    """The named preset for whole batches; an unknown name raises listing the valid names."""
    return BatchAugment(name, preset_spec(name))
