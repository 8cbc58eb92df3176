"""Augmentation presets: by name, shape and dtype kept, seeded, unknown names fail loudly."""

from __future__ import annotations

import pytest
import torch

from trainers._registry import UnknownNameError
from trainers.data.augment import AUGMENTATIONS, create_augmentation

PRESETS = ["none", "paper", "strong", "fata2023", "jawahar2022", "alim2024", "stain-jitter",
           "brightness-jitter", "texture-blur"]  # fmt: skip


def cell_image(size: int = 48) -> torch.Tensor:
    """A coloured, asymmetric blob on black, so flips and rotations change the pixels."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    blob = ((x - size * 0.4) ** 2 + (y - size * 0.55) ** 2 < (size * 0.3) ** 2).to(torch.uint8)
    img = torch.stack([blob * 180, blob * 90 + (x < size // 3) * 40, blob * 200])
    return img.to(torch.uint8)


def test_registry_holds_every_preset() -> None:
    assert AUGMENTATIONS.names() == sorted(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_keeps_shape_and_dtype(name: str) -> None:
    aug = create_augmentation(name, 48)
    out = aug(cell_image())
    assert out.shape == (3, 48, 48)
    assert out.dtype == torch.uint8


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_seeded(name: str) -> None:
    aug = create_augmentation(name, 48)
    img = cell_image()
    torch.manual_seed(123)
    a = aug(img)
    torch.manual_seed(123)
    b = aug(img)
    assert torch.equal(a, b)
    if name == "none":
        assert torch.equal(a, img)
    else:
        # some seed among a handful changes the image: the preset really is random
        outs = []
        for seed in range(6):
            torch.manual_seed(seed)
            outs.append(aug(img))
        assert any(not torch.equal(o, img) for o in outs)
        assert any(not torch.equal(o, outs[0]) for o in outs[1:])


def test_geometric_fill_is_black() -> None:
    # a fully white image rotated/shifted by `paper` gains black (0), never grey, corners
    aug = create_augmentation("paper", 48)
    img = torch.full((3, 48, 48), 255, dtype=torch.uint8)
    seen_black = False
    for seed in range(10):
        torch.manual_seed(seed)
        out = aug(img)
        seen_black |= bool((out == 0).all(dim=0).any())
    assert seen_black


def test_colour_jitter_only_in_colour_presets() -> None:
    # `paper` only moves pixels: a flat grey image stays flat grey; `strong` changes colours
    flat = torch.full((3, 32, 32), 128, dtype=torch.uint8)
    torch.manual_seed(0)
    paper = create_augmentation("paper", 32)
    centre = paper(flat)[:, 12:20, 12:20]
    assert torch.equal(centre, flat[:, 12:20, 12:20])
    strong = create_augmentation("strong", 32)
    colours = set()
    for seed in range(5):
        torch.manual_seed(seed)
        colours.add(tuple(strong(cell_image(32))[:, 16, 13].tolist()))
    assert len(colours) > 1


def test_output_resized_to_size() -> None:
    out = create_augmentation("paper", 32)(cell_image(64))
    assert out.shape == (3, 32, 32)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        create_augmentation("papr", 32)
    msg = str(info.value)
    assert "'papr'" in msg and "data.augmentation" in msg
    for name in PRESETS:
        assert name in msg


@pytest.mark.parametrize("name", PRESETS)
def test_per_image_pipeline_reads_the_preset_spec(name: str) -> None:
    from torchvision.transforms import v2

    from trainers.data.augment import preset_spec

    spec = preset_spec(name)
    steps = {type(t).__name__: t for t in create_augmentation(name, 32).transforms}
    flips = [steps.get("RandomHorizontalFlip"), steps.get("RandomVerticalFlip")]
    assert [f.p if f else 0.0 for f in flips] == [spec.hflip, spec.vflip]
    affine = steps.get("RandomAffine")
    assert (affine is not None) == spec.affine
    if affine is not None:
        assert list(affine.degrees) == [-spec.degrees, spec.degrees]
        assert tuple(affine.scale) == spec.scale
        assert affine.translate == ((spec.translate,) * 2 if spec.translate else None)
    jitter = steps.get("ColorJitter")
    assert (jitter is not None) == spec.colour
    if jitter is not None and spec.contrast:
        assert tuple(jitter.contrast) == pytest.approx((1 - spec.contrast, 1 + spec.contrast))
    erase = steps.get("RandomErasing")
    assert (erase.p if erase else 0.0) == spec.erase_p
    assert isinstance(create_augmentation(name, 32), v2.Compose)
