"""The two augmentation paths read one spec per preset and draw from the same distributions.

The per-image torchvision path (``data.augment_on: loader``) and the batched Kornia path
(``device``) are built from the same :class:`AugmentSpec`; here, for every preset, thousands of
parameter draws of each path are compared with two-sample Kolmogorov-Smirnov tests (rotation,
zoom, shift, colour factors, blur width, erasing box) and binomial bounds (flip and erasing
rates), and
the batched path is checked to be seeded, per-sample random and exact where the two paths
must agree pixel for pixel.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from trainers.data.augment import (
    AUGMENTATIONS,
    AugmentSpec,
    blur_kernel_size,
    pil_steps,
    preset_spec,
    tensor_steps,
)
from trainers.data.batch_augment import (
    BATCH_AUGMENTATIONS,
    BatchAugment,
    RandomErase,
    create_batch_augmentation,
    kornia_steps,
)

N = 3000
SIDE = 1000  # a large side: torchvision's whole-pixel shifts are then almost continuous
PRESETS = AUGMENTATIONS.names()


def _by_type(steps: list[Any], name: str) -> Any | None:
    return next((s for s in steps if type(s).__name__ == name), None)


def torchvision_draws(spec: AugmentSpec, n: int = N) -> dict[str, np.ndarray]:
    """``n`` parameter draws of the per-image path (its transforms' own ``make_params``)."""
    torch.manual_seed(0)
    steps = pil_steps(spec) + tensor_steps(spec)
    flat = [torch.zeros(3, SIDE, SIDE, dtype=torch.uint8)]
    out: dict[str, list[float]] = {}
    affine, jitter, blur, erase = (
        _by_type(steps, k) for k in ("RandomAffine", "ColorJitter", "GaussianBlur", "RandomErasing")
    )
    for _ in range(n):
        if affine is not None:
            p = affine.make_params(flat)
            out.setdefault("angle", []).append(p["angle"])
            out.setdefault("scale", []).append(p["scale"])
            out.setdefault("tx", []).append(p["translate"][0] / SIDE)
            out.setdefault("ty", []).append(p["translate"][1] / SIDE)
        if jitter is not None:
            p = jitter.make_params(flat)
            for key in ("brightness", "contrast", "saturation", "hue"):
                if p[f"{key}_factor"] is not None:
                    out.setdefault(key, []).append(float(p[f"{key}_factor"]))
        if blur is not None:
            out.setdefault("blur_sigma", []).append(blur.make_params(flat)["sigma"][0])
        if erase is not None:
            p = erase.make_params(flat)
            out.setdefault("erase_h", []).append(p["h"] / SIDE)
            out.setdefault("erase_w", []).append(p["w"] / SIDE)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def kornia_draws(spec: AugmentSpec, n: int = N) -> dict[str, np.ndarray]:
    """``n`` parameter draws of the batched path (one batch of ``n`` images)."""
    torch.manual_seed(1)
    steps = kornia_steps(spec)
    shape = (n, 3, SIDE, SIDE)
    out: dict[str, torch.Tensor] = {}
    for step in steps:
        kind = type(step).__name__
        if kind == "RandomAffine":
            p = step.forward_parameters(shape)
            out.update(angle=p["angle"], scale=p["scale"][:, 0], tx=p["translations"][:, 0] / SIDE,
                       ty=p["translations"][:, 1] / SIDE)  # fmt: skip
        elif kind == "ColorJitter":
            p = step.forward_parameters(shape)
            for key in ("brightness", "contrast", "saturation", "hue"):
                if getattr(spec, key):
                    out[key] = p[f"{key}_factor"]
        elif kind == "RandomGaussianBlur":
            out["blur_sigma"] = step.forward_parameters(shape)["sigma"]
        elif isinstance(step, RandomErase):
            p = step.params(n, SIDE, SIDE)
            out.update(erase_h=p["h"] / SIDE, erase_w=p["w"] / SIDE)
    return {k: v.double().numpy() for k, v in out.items()}


def test_one_registry_for_both_paths() -> None:
    assert BATCH_AUGMENTATIONS is AUGMENTATIONS
    assert PRESETS == [
        "alim2024",
        "brightness-jitter",
        "fata2023",
        "jawahar2022",
        "none",
        "paper",
        "stain-jitter",
        "strong",
        "texture-blur",
    ]
    for name in PRESETS:
        spec = preset_spec(name)
        assert create_batch_augmentation(name).spec == spec
        # every random field of the spec is expressed by a step on both paths
        kinds = {type(s).__name__ for s in kornia_steps(spec)}
        assert ("RandomAffine" in kinds) == spec.affine
        assert ("ColorJitter" in kinds) == spec.colour
        assert ("RandomErase" in kinds) == bool(spec.erase_p)
        assert ("RandomGaussianBlur" in kinds) == spec.blurs


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "none"])
def test_parameter_distributions_agree(name: str) -> None:
    spec = preset_spec(name)
    tv, ko = torchvision_draws(spec), kornia_draws(spec)
    assert sorted(tv) == sorted(ko) and tv, (sorted(tv), sorted(ko))
    for key in tv:
        result = stats.ks_2samp(tv[key], ko[key])
        assert result.pvalue > 1e-3, (
            f"{name}.{key}: KS D={result.statistic:.3f} p={result.pvalue:.2g}"
        )
    # and both match the spec's ranges, not merely each other
    if spec.affine:
        assert (
            np.abs(ko["angle"]).max() <= spec.degrees
            and np.abs(ko["angle"]).max() > 0.95 * spec.degrees
        )
        assert spec.scale[0] <= ko["scale"].min() and ko["scale"].max() <= spec.scale[1]
        assert np.abs(ko["tx"]).max() <= spec.translate + 1e-9
    if spec.blurs:
        assert spec.blur[0] <= ko["blur_sigma"].min() and ko["blur_sigma"].max() <= spec.blur[1]


def _flip_rates(apply: Any, n: int) -> tuple[float, float]:
    """Shares of horizontally and vertically flipped outputs of a one-hot 2x2 image."""
    h = v = 0
    for out in apply(n):
        where = int(out[0].argmax())  # where pixel (0, 0) of channel 0 went, as row * 2 + col
        corner = (where // 2, where % 2)
        v += corner[0] == 1
        h += corner[1] == 1
    return h / n, v / n


@pytest.mark.parametrize("name", ["paper", "fata2023"])
def test_flip_rates_agree(name: str) -> None:
    spec = AugmentSpec(hflip=preset_spec(name).hflip, vflip=preset_spec(name).vflip)
    img = torch.zeros(3, 2, 2, dtype=torch.uint8)
    img[:, 0, 0] = 255
    per_image = create_augmentation_from(spec)
    torch.manual_seed(0)
    tv = _flip_rates(lambda n: [per_image(img).float() for _ in range(n)], 2000)
    batch = BatchAugment(name, spec)
    ko = _flip_rates(
        lambda n: batch(img.expand(n, 3, 2, 2), torch.Generator().manual_seed(0)), 2000
    )
    sigma = math.sqrt(0.25 / 2000)
    for got_tv, got_ko, p in zip(tv, ko, (spec.hflip, spec.vflip), strict=True):
        assert abs(got_tv - p) < 4 * sigma and abs(got_ko - p) < 4 * sigma, (tv, ko, p)


def create_augmentation_from(spec: AugmentSpec) -> Any:
    """The per-image pipeline of an ad-hoc spec, built like ``create_augmentation``."""
    from torchvision.transforms import v2

    return v2.Compose([v2.ToPILImage(), *pil_steps(spec), v2.PILToTensor(), *tensor_steps(spec)])


def test_erasing_rate_and_black_boxes() -> None:
    spec = preset_spec("strong")
    erase = RandomErase(spec.erase_p, spec.erase_scale, spec.erase_ratio)
    torch.manual_seed(0)
    out = erase(torch.ones(4000, 3, 20, 20))
    erased = (out == 0).flatten(1).any(1).float().mean().item()
    assert abs(erased - spec.erase_p) < 4 * math.sqrt(0.25 * 0.75 / 4000)
    # a box is black on all three channels and covers 2-15% of the area (up to rounding)
    black = (out == 0).all(1).flatten(1).float().mean(1)
    hit = black[black > 0]
    assert hit.min() >= 0.01 and hit.max() <= 0.17


def test_pixel_identical_where_the_paths_must_agree() -> None:
    # a certain flip and a neutral colour step leave nothing to chance: both paths agree exactly
    img = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    spec = AugmentSpec(hflip=1.0, vflip=1.0)
    tv = create_augmentation_from(spec)(img)
    ko = BatchAugment("flips", spec)(img[None], torch.Generator())[0]
    assert torch.equal((ko * 255).round().to(torch.uint8), tv)


@pytest.mark.parametrize("sigma", [0.7, 1.6, 2.4])
def test_blur_paths_agree_pixel_for_pixel_at_one_width(sigma: float) -> None:
    # one SD leaves nothing to chance: the two blurs differ by rounding to uint8 only
    img = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    spec = AugmentSpec(blur=(sigma, sigma))
    tv = create_augmentation_from(spec)(img).float()
    ko = BatchAugment("blur", spec)(img[None], torch.Generator())[0] * 255
    assert (tv - ko).abs().max() <= 0.51
    # and it is a blur: the pixel-to-pixel differences shrink
    assert tv.diff(dim=-1).abs().mean() < 0.5 * img.float().diff(dim=-1).abs().mean()


def test_blur_kernel_covers_three_sds() -> None:
    assert blur_kernel_size(AugmentSpec(blur=(0.5, 1.0))) == 7
    assert blur_kernel_size(preset_spec("texture-blur")) % 2 == 1
    assert not AugmentSpec().blurs and preset_spec("texture-blur").blurs


def test_batch_augmentation_is_seeded_and_per_sample() -> None:
    aug = create_batch_augmentation("strong")
    x = torch.randint(0, 256, (8, 3, 24, 24), dtype=torch.uint8)
    state = torch.get_rng_state()
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(6)))
    same = x[:1].expand(8, 3, 24, 24)
    out = aug(same, torch.Generator().manual_seed(0))
    assert len({tuple(o.flatten()[:64].tolist()) for o in out}) == 8  # each image its own draw
    assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1


def test_batch_augmentation_refuses_bad_input() -> None:
    aug = create_batch_augmentation("paper")
    with pytest.raises(ValueError, match=r"shape \[B, 3, H, W\]"):
        aug(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.Generator())
    on_gpu = SimpleNamespace(device=torch.device("cuda"))  # only its device is read
    with pytest.raises(ValueError, match="pass torch.Generator"):
        aug(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), on_gpu)  # type: ignore[arg-type]


def test_none_preset_only_converts() -> None:
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = create_batch_augmentation("none")(x, torch.Generator())
    torch.testing.assert_close(out, x.float() / 255, rtol=0, atol=1e-7)
