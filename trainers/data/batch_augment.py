"""Batched augmentation on the training device, with random parameters per sample.

The presets of :mod:`trainers.data.augment` run per image inside the data loader, where
augmenting costs more than reading the decoded-image cache. This module applies the same
presets (same names, same documented ranges) to a whole uint8 batch at once, on whatever
device the batch is on (CPU or CUDA), so the loader only reads bytes and the device does the
arithmetic.

Written by hand because torchvision's v2 transforms draw ONE set of random parameters per call:
given a batch they flip, rotate or jitter every image the same way. Kornia has per-sample
batched transforms but is not a project dependency; what the presets need is short:

* geometry (flips, rotation, zoom, shift) is ONE affine matrix per image, flips folded in,
  applied with ``torch.nn.functional.affine_grid`` + ``grid_sample`` (bilinear, zeros padding
  = black fill, as the cells sit on black; ``align_corners=False``);
* colour jitter (brightness, contrast, saturation; hue for ``strong``) and ``jawahar2022``'s
  random contrast are per-sample factors broadcast over the batch, with torchvision's formulas
  (grey = 0.299 R + 0.587 G + 0.114 B, contrast blends with the image's mean grey, clamping
  after each step). Two differences from ``ColorJitter``: the steps run in a fixed order
  (brightness, contrast, saturation, hue) instead of a random one, and the hue shift is a
  rotation of the chroma plane in YIQ space by ``2 pi h`` - a close, cheap stand-in for
  shifting H in HSV by ``h``;
* random erasing (``strong``) is a per-sample rectangle mask built from coordinate
  comparisons; ``RandomErasing``'s retry loop is not needed because with area <= 15% and
  aspect ratio <= 3.3 the box always fits (its longer side is at most 0.70 of the image side).

Every random number comes from the ``generator`` passed in (a CPU generator; the parameters
are moved to the batch's device afterwards), so a seed gives the same batch on any device up
to floating-point rounding, and exactly the same on the CPU.

>>> import torch
>>> aug = create_batch_augmentation("paper")
>>> out = aug(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.Generator().manual_seed(0))
>>> out.shape, out.dtype
(torch.Size([4, 3, 32, 32]), torch.float32)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainers._registry import Registry

__all__ = ["BATCH_AUGMENTATIONS", "BatchAugment", "create_batch_augmentation"]

# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma)
_GREY = (0.2989, 0.587, 0.114)
# RGB -> YIQ (FCC NTSC) and its inverse, for the hue rotation
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.5959, -0.2746, -0.3213), (0.2115, -0.5227, 0.3112))
# columns of the uniform draws each sample gets (one row per sample, one call per batch)
_U_HFLIP, _U_VFLIP, _U_ANGLE, _U_SCALE, _U_TX, _U_TY = range(6)
_U_BRIGHT, _U_CONTRAST, _U_SAT, _U_HUE = range(6, 10)
_U_ERASE, _U_AREA, _U_RATIO, _U_TOP, _U_LEFT = range(10, 15)
_N_UNIFORM = 15


@dataclass(frozen=True)
class BatchAugment:
    """A preset's ranges; calling it augments a batch ``[B, 3, S, S]`` with per-sample draws.

    Geometry: ``hflip``/``vflip`` are flip probabilities, the rotation is uniform in
    ``[-degrees, degrees]`` (clockwise for positive angles, as torchvision's affine), the
    shift uniform in ``[-translate, translate]`` of the side (rounded to whole pixels), the
    zoom uniform in ``scale``. Colour factors are uniform in ``[1 - x, 1 + x]`` (hue: shift in
    ``[-hue, hue]`` of a turn). ``erase_p`` is the chance of blacking out one box covering
    ``erase_scale`` of the area with aspect ratio (log-uniform) in ``erase_ratio``.

    Integer input is read as 0-255, float input as 0-1; the result is float32 in [0, 1], of
    the input's shape, on its device.

    >>> flip = BatchAugment("flip", hflip=1.0)
    >>> x = torch.arange(4, dtype=torch.uint8).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    >>> (flip(x, torch.Generator()) * 255).round()[0, 0, 0].tolist()
    [3.0, 2.0, 1.0, 0.0]
    """

    name: str
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

    @property
    def geometric(self) -> bool:
        """Whether the preset moves pixels (else ``grid_sample`` is skipped)."""
        return bool(self.hflip or self.vflip or self.degrees or self.translate
                    or self.scale != (1.0, 1.0))  # fmt: skip

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
        if len(x) == 0:
            return x
        u = torch.rand(len(x), _N_UNIFORM, generator=generator).to(x.device)
        if self.geometric:
            x = self._geometry(x, u)
        x = self._colour(x, u)
        if self.erase_p > 0:
            x = self._erase(x, u)
        return x

    # ------------------------------------------------------------------------ geometry

    def theta(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``[B, 2, 3]`` matrices for ``affine_grid``: output -> input, normalised coordinates.

        Forward (input -> output) about the centre, in pixels: ``out = T + s R(a) F in``
        (flip, then rotate and zoom, then shift, as torchvision's flip then RandomAffine).
        ``affine_grid`` needs the inverse, ``in = F R(-a) (out - T) / s``, expressed in the
        normalised coordinates of ``align_corners=False``, where pixel offsets from the centre
        are ``D n`` with ``D = diag(W/2, H/2)``.
        """
        flip_x = torch.where(u[:, _U_HFLIP] < self.hflip, -1.0, 1.0)
        flip_y = torch.where(u[:, _U_VFLIP] < self.vflip, -1.0, 1.0)
        angle = torch.deg2rad((2 * u[:, _U_ANGLE] - 1) * self.degrees)
        lo, hi = self.scale
        zoom = lo + (hi - lo) * u[:, _U_SCALE]
        tx = torch.round((2 * u[:, _U_TX] - 1) * self.translate * width)
        ty = torch.round((2 * u[:, _U_TY] - 1) * self.translate * height)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # a positive angle turns the image clockwise on screen (y points down), as
        # torchvision's affine does: R(a) = [[cos, -sin], [sin, cos]], R(-a) = R(a)^T
        half_w, half_h = width / 2.0, height / 2.0
        a = flip_x * cos / zoom
        b = flip_x * sin / zoom * (half_h / half_w)
        c = -flip_y * sin / zoom * (half_w / half_h)
        d = flip_y * cos / zoom
        # the shift, taken back through F R(-a) / s, then into normalised units
        ex = -(flip_x * (cos * tx + sin * ty)) / zoom / half_w
        ey = -(flip_y * (cos * ty - sin * tx)) / zoom / half_h
        return torch.stack([torch.stack([a, b, ex], 1), torch.stack([c, d, ey], 1)], 1)

    def _geometry(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        theta = self.theta(u, x.shape[-2], x.shape[-1])
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # -------------------------------------------------------------------------- colour

    def _colour(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        def factor(column: int, spread: float) -> torch.Tensor:
            return (1 - spread + 2 * spread * u[:, column]).view(-1, 1, 1, 1)

        if self.brightness:
            x = (x * factor(_U_BRIGHT, self.brightness)).clamp_(0, 1)
        if self.contrast:
            mean = _grey(x).mean(dim=(-3, -2, -1), keepdim=True)
            x = _blend(x, mean, factor(_U_CONTRAST, self.contrast))
        if self.saturation:
            x = _blend(x, _grey(x), factor(_U_SAT, self.saturation))
        if self.hue:
            x = _rotate_hue(x, (2 * u[:, _U_HUE] - 1) * self.hue)
        return x

    # ------------------------------------------------------------------------- erasing

    def _erase(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        lo, hi = self.erase_scale
        area = (lo + (hi - lo) * u[:, _U_AREA]) * (height * width)
        log_lo, log_hi = math.log(self.erase_ratio[0]), math.log(self.erase_ratio[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, _U_RATIO])
        box_h = torch.sqrt(area * ratio).round().clamp(1, height)
        box_w = torch.sqrt(area / ratio).round().clamp(1, width)
        top = torch.floor(u[:, _U_TOP] * (height - box_h + 1)).view(-1, 1, 1)
        left = torch.floor(u[:, _U_LEFT] * (width - box_w + 1)).view(-1, 1, 1)
        rows = torch.arange(height, device=x.device, dtype=x.dtype).view(1, -1, 1)
        cols = torch.arange(width, device=x.device, dtype=x.dtype).view(1, 1, -1)
        inside = ((rows >= top) & (rows < top + box_h.view(-1, 1, 1))
                  & (cols >= left) & (cols < left + box_w.view(-1, 1, 1)))  # fmt: skip
        inside &= (u[:, _U_ERASE] < self.erase_p).view(-1, 1, 1)
        return x.masked_fill(inside.unsqueeze(1), 0.0)


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    return (_GREY[0] * r + _GREY[1] * g + _GREY[2] * b).unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend``: ``factor * x + (1 - factor) * other``, clamped to [0, 1]."""
    return (factor * x + (1 - factor) * other).clamp_(0, 1)


def _rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each image's chroma (I, Q) by ``2 pi turns`` in YIQ space; luma is kept."""
    to_yiq = torch.tensor(_RGB_TO_YIQ, dtype=x.dtype, device=x.device)
    to_rgb = torch.linalg.inv(to_yiq)
    angle = 2 * math.pi * turns
    cos, sin = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rotate = torch.stack(
        [torch.stack([one, zero, zero], 1),
         torch.stack([zero, cos, -sin], 1),
         torch.stack([zero, sin, cos], 1)], 1,
    )  # fmt: skip
    matrix = to_rgb @ rotate @ to_yiq  # [B, 3, 3]: RGB -> RGB per sample
    return torch.einsum("bij,bjhw->bihw", matrix, x).clamp_(0, 1)


#: name -> ``() -> BatchAugment``; the names and ranges of ``trainers.data.augment``'s presets
BATCH_AUGMENTATIONS: Registry[Callable[[], BatchAugment]] = Registry(
    "augmentation preset", key="data.augmentation"
)


@BATCH_AUGMENTATIONS.register("none")
def _none() -> BatchAugment:
    """No augmentation: only the conversion to float in [0, 1]."""
    return BatchAugment("none")


@BATCH_AUGMENTATIONS.register("paper")
def _paper() -> BatchAugment:
    """Flips (p=0.5 each), rotation +-25 degrees, shift up to 10%, zoom 0.9-1.1, black fill."""
    return BatchAugment("paper", hflip=0.5, vflip=0.5, degrees=25.0, translate=0.1,
                        scale=(0.9, 1.1))  # fmt: skip


@BATCH_AUGMENTATIONS.register("strong")
def _strong() -> BatchAugment:
    """``paper`` + colour jitter (0.25 brightness/contrast/saturation, 0.04 hue) + erasing (p=0.25)."""
    return BatchAugment("strong", hflip=0.5, vflip=0.5, degrees=25.0, translate=0.1,
                        scale=(0.9, 1.1), brightness=0.25, contrast=0.25, saturation=0.25,
                        hue=0.04, erase_p=0.25, erase_scale=(0.02, 0.15),
                        erase_ratio=(0.3, 3.3))  # fmt: skip


@BATCH_AUGMENTATIONS.register("fata2023")
def _fata2023() -> BatchAugment:
    """Horizontal flip (p=0.5), rotation +-10 degrees, zoom 0.9-1.1; no shift, no colour."""
    return BatchAugment("fata2023", hflip=0.5, degrees=10.0, scale=(0.9, 1.1))


@BATCH_AUGMENTATIONS.register("alim2024")
def _alim2024() -> BatchAugment:
    """Horizontal and vertical flips (p=0.5 each), rotation +-20 degrees, zoom 0.8-1.2."""
    return BatchAugment("alim2024", hflip=0.5, vflip=0.5, degrees=20.0, scale=(0.8, 1.2))


@BATCH_AUGMENTATIONS.register("jawahar2022")
def _jawahar2022() -> BatchAugment:
    """Horizontal flip (p=0.5), rotation +-15 degrees, zoom 0.9-1.1, contrast 0.8-1.2."""
    return BatchAugment("jawahar2022", hflip=0.5, degrees=15.0, scale=(0.9, 1.1),
                        contrast=0.2)  # fmt: skip


def create_batch_augmentation(name: str) -> BatchAugment:
    """The named preset for whole batches; an unknown name raises listing the valid names."""
    return BATCH_AUGMENTATIONS.get(name)()
