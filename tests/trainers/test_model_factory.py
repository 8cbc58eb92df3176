"""Models by name, heads, ALNet's layer table, input-size checks and offline pretrained weights."""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from trainers._registry import UnknownNameError
from trainers.models import (
    HEADS,
    Classifier,
    PretrainedWeightsError,
    backbone_problem,
    create_alnet,
    create_model,
    model_data_config,
)

# (name, smallest input that runs): the study's five plus ResNet-50 and EfficientNet-B0
STUDY_BACKBONES = [
    ("vgg16", 32),
    ("legacy_xception", 32),
    ("mobilenetv1_100", 32),
    ("inception_resnet_v2", 75),
    ("densenet121", 32),
    ("resnet50", 32),
    ("efficientnet_b0", 32),
]


@pytest.mark.parametrize("name,size", STUDY_BACKBONES)
def test_study_backbones_build_by_name_and_give_logits(name: str, size: int) -> None:
    # shapes only: built on the meta device (no memory, no init) so all seven stay fast
    with torch.device("meta"):
        model = create_model(name, num_classes=3, head="dense_dropout", head_hidden=64, dropout=0.1)
        out = model.eval()(torch.empty(2, 3, size, size))
    assert isinstance(model, Classifier) and model.name == name
    assert out.shape == (2, 3)
    assert model.head[0].in_features == model.num_features
    assert backbone_problem(name, size) is None


@pytest.mark.slow
@pytest.mark.parametrize("name,size", STUDY_BACKBONES)
def test_study_backbones_run_for_real_at_minimum_size(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 2) and torch.isfinite(out).all()


def test_minimum_input_size_error_names_key_rule_and_fix() -> None:
    msg = backbone_problem("inception_resnet_v2", 64)
    assert msg is not None
    assert "inception_resnet_v2 needs inputs of at least 75 px" in msg
    assert "input_size=64" in msg and "data.input_size" in msg
    assert backbone_problem("inception_resnet_v2", 75) is None
    assert "needs inputs of at least 32 px" in (backbone_problem("vgg16", 24) or "")


def test_unknown_backbone_and_fixed_size_models() -> None:
    msg = backbone_problem("resnet5O", 224)
    assert msg is not None and "model.backbone" in msg and "resnet50" in msg
    with pytest.raises(ValueError, match="unknown model 'resnet5O'"):
        create_model("resnet5O", 2)
    fixed = backbone_problem("vit_tiny_patch16_224", 96)
    assert fixed is not None and "exactly 224 px" in fixed


def test_heads_registry_builds_each_head() -> None:
    assert HEADS.names() == ["dense512", "dense_dropout", "linear"]
    lin = create_model("test_resnet", 2, head="linear").head
    assert [type(m) for m in lin] == [nn.Linear] and lin[0].in_features == 96
    d512 = create_model("test_resnet", 4, head="dense512", dropout=0.3).head
    assert [type(m) for m in d512] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (d512[0].out_features, d512[3].in_features, d512[3].out_features) == (512, 512, 4)
    dd = create_model("test_resnet", 2, head="dense_dropout", head_hidden=128, dropout=0.4).head
    assert [type(m) for m in dd] == [nn.Linear, nn.ReLU, nn.Dropout] * 2 + [nn.Linear]
    assert [m.out_features for m in dd if isinstance(m, nn.Linear)] == [128, 64, 2]
    assert all(m.p == 0.4 for m in dd if isinstance(m, nn.Dropout))
    with pytest.raises(UnknownNameError, match="unknown head 'mlp' in model.head; valid names"):
        create_model("test_resnet", 2, head="mlp")
    x = torch.randn(2, 3, 32, 32)
    assert create_model("test_resnet", 4, head="dense512").eval()(x).shape == (2, 4)


# the ALNet layer table in SEEDS.md, (layer kind, output shape C x H x W)
ALNET_TABLE = [
    ("conv", (32, 220, 220)), ("conv", (32, 216, 216)), ("pool", (32, 108, 108)),
    ("pool", (32, 54, 54)), ("bn", (32, 54, 54)),
    ("conv", (64, 50, 50)), ("conv", (64, 46, 46)), ("pool", (64, 23, 23)),
    ("pool", (64, 11, 11)), ("bn", (64, 11, 11)),
    ("conv", (128, 7, 7)), ("pool", (128, 3, 3)), ("bn", (128, 3, 3)),
]  # fmt: skip
KINDS = {nn.Conv2d: "conv", nn.MaxPool2d: "pool", nn.BatchNorm2d: "bn"}


def test_alnet_reproduces_every_shape_of_the_layer_table() -> None:
    torch.manual_seed(0)
    model = create_model("alnet", num_classes=2, dropout=0.2).eval()
    x = torch.randn(1, 3, 224, 224)
    seen = []
    with torch.no_grad():
        for layer in model.backbone:
            x = layer(x)
            if type(layer) in KINDS:
                seen.append((KINDS[type(layer)], tuple(x.shape[1:])))
        assert x.shape == (1, 1152)  # flatten of 3x3x128
        logits = model.head(x)
    assert seen == ALNET_TABLE
    assert all(
        c.kernel_size == (5, 5) and c.padding == (0, 0)
        for c in model.backbone
        if isinstance(c, nn.Conv2d)
    )
    assert logits.shape == (1, 2)
    head = [type(m) for m in model.head]
    assert head == [nn.Dropout, nn.Linear, nn.ReLU, nn.Linear] and model.head[0].p == 0.2
    assert model.head[1].out_features == 128
    assert model_data_config("alnet")["std"] == (1.0, 1.0, 1.0)


def test_alnet_input_rule_and_head_rule() -> None:
    msg = backbone_problem("alnet", 96)
    assert msg is not None and "224" in msg and "data.input_size" in msg
    assert backbone_problem("alnet", 224) is None
    with pytest.raises(ValueError, match="alnet has the head from its layer table"):
        create_model("alnet", 2, head="dense512")
    assert create_alnet(4).head[-1].out_features == 4


# ------------------------------------------------------------------------------ pretrained


def _random_timm_weights(name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in timm.create_model(name).state_dict().items()}


def _assert_backbone_equals(model: Classifier, sd: dict[str, torch.Tensor]) -> None:
    own = model.backbone.state_dict()
    assert own, "empty backbone"
    for k, v in own.items():
        assert torch.equal(v, sd[k]), k


def test_pretrained_path_safetensors_loads_backbone(tmp_path: Path) -> None:
    sd = _random_timm_weights("test_resnet", seed=1)
    path = tmp_path / "w.safetensors"
    save_file(sd, str(path))  # includes the 1000-class classifier, which is dropped
    model = create_model("test_resnet", 2, pretrained=True, pretrained_path=path)
    _assert_backbone_equals(model, sd)
    # our own checkpoints (backbone./head. prefixes) load too
    path2 = tmp_path / "ours.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path2))
    again = create_model("test_resnet", 5, pretrained_path=path2)
    _assert_backbone_equals(again, sd)


def test_pretrained_path_torch_checkpoint_is_read_weights_only(tmp_path: Path) -> None:
    sd = _random_timm_weights("test_resnet", seed=2)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    _assert_backbone_equals(create_model("test_resnet", 2, pretrained_path=path), sd)
    evil = tmp_path / "evil.pth"
    with evil.open("wb") as fh:
        pickle.dump({"state_dict": sd, "payload": Path("/x")}, fh)
    with pytest.raises(PretrainedWeightsError, match=r"evil\.pth.*weights-only"):
        create_model("test_resnet", 2, pretrained_path=evil)


def test_weights_of_another_model_are_refused_with_names(tmp_path: Path) -> None:
    path = tmp_path / "eff.safetensors"
    save_file(_random_timm_weights("test_efficientnet", seed=0), str(path))
    with pytest.raises(
        PretrainedWeightsError, match=r"eff\.safetensors do not fit test_resnet.*missing"
    ):
        create_model("test_resnet", 2, pretrained_path=path)


def test_offline_without_cache_fails_at_once_naming_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    attempts: list[object] = []

    def no_network(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name in ("test_resnet", "legacy_xception"):  # an HF-hub model and a URL-only model
        with pytest.raises(PretrainedWeightsError) as info:
            create_model(name, 2, pretrained=True)
        msg = str(info.value)
        assert name in msg and "model.pretrained_path" in msg and "download" in msg
    assert attempts == []  # no retry loop: nothing even tried to connect
    with pytest.raises(PretrainedWeightsError, match="alnet has no ImageNet weights"):
        create_model("alnet", 2, pretrained=True)


def test_pretrained_from_local_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = timm.get_pretrained_cfg("test_resnet").hf_hub_id  # timm/test_resnet.r160_in1k
    cache = tmp_path / "hf"
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0123abcd")
    sd = _random_timm_weights("test_resnet", seed=5)
    save_file(sd, str(snap / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    _assert_backbone_equals(create_model("test_resnet", 2, pretrained=True), sd)


def test_model_data_config_from_timm() -> None:
    cfg = model_data_config("resnet50")
    assert cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert cfg["interpolation"] == "bicubic"
    assert model_data_config("inception_resnet_v2")["std"] == pytest.approx((0.5, 0.5, 0.5))


def test_pre_logits_false_pools_vggs_convolutional_features_as_keras_does() -> None:
    """timm's VGG keeps fc6/fc7 (4096 wide) with num_classes=0; the main study's Keras VGG-16
    without its top pools the 512 convolutional channels."""
    import torch

    kept = create_model("vgg11", 2)
    pooled = create_model("vgg11", 2, pre_logits=False)
    assert kept.num_features == 4096 and pooled.num_features == 512
    assert not any(k.startswith("backbone.pre_logits.") for k in pooled.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        features = pooled.backbone.forward_features(x).mean(dim=(2, 3))  # global average pool
        assert torch.allclose(pooled.backbone(x), features, atol=1e-6)
        assert pooled(x).shape == (1, 2)
    # a backbone without pre-logits layers is unchanged
    assert (
        create_model("test_resnet", 2, pre_logits=False).num_features
        == create_model("test_resnet", 2).num_features
    )
