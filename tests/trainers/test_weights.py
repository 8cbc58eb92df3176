"""Weight caches: fetching from a loopback Hugging Face hub and URL host into the folders timm
reads, torchvision-format files through timm's conversion, and the pre-trial check."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import hf_hub_download, try_to_load_from_cache

from hub_cache import (
    FakeHub,
    go_online,
    lay_out_cached_weights,
    point_weights_url,
    pretrained_tensors,
    save_tensors,
    use_empty_caches,
)
from trainers.models import PretrainedWeightsError, create_model
from trainers.weights import (
    WeightsFetchError,
    backbones_needing_weights,
    fetch_weights,
    missing_weight_problems,
    weight_source,
)

XCEPTION_FILE = "xception-43020ad28.pth"  # the basename of legacy_xception's release URL


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Empty HF_HOME and TORCH_HOME for this test, set in the environment."""
    return use_empty_caches(tmp_path, monkeypatch)


@pytest.fixture
def hub(caches: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch):
    with FakeHub() as server:
        go_online(monkeypatch, server, *caches)
        yield server


def _no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def _assert_started_from(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    own = model.backbone.state_dict()
    assert own
    for key, value in own.items():
        assert torch.equal(value, tensors[key]), key


# --------------------------------------------------------------------------------- fetch


def test_fetch_from_the_hub_fills_the_cache_timm_reads(
    hub: FakeHub, caches: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    hf_home, _ = caches
    repo = weight_source("test_resnet").hf_repo
    assert repo == "timm/test_resnet.r160_in1k"
    served = pretrained_tensors("test_resnet", seed=11)
    sha = hub.add_hf_file(repo, "model.safetensors", served)

    path, downloaded = fetch_weights("test_resnet", progress=False)
    assert downloaded
    # exactly huggingface_hub's layout: the snapshot file is a link to the blob named by its sha256
    folder = hf_home / "hub" / "models--timm--test_resnet.r160_in1k"
    commit = hub.repos[repo]["commit"]
    assert path == folder / "snapshots" / commit / "model.safetensors"
    assert path.resolve() == (folder / "blobs" / sha).resolve()
    assert (folder / "refs" / "main").read_text() == commit
    assert try_to_load_from_cache(repo, "model.safetensors", cache_dir=str(hf_home / "hub")) == str(
        path
    )
    assert [r[:2] for r in hub.requests] == [("HEAD", "hub"), ("GET", "cdn")]

    again, downloaded = fetch_weights("test_resnet", progress=False)
    assert (again, downloaded) == (path, False) and len(hub.requests) == 2  # no second download

    attempts = _no_network(monkeypatch)
    _assert_started_from(create_model("test_resnet", 2, pretrained=True), served)
    assert attempts == []  # training read the cache only


def test_fetch_falls_back_to_the_pickled_file_as_timm_does(hub: FakeHub) -> None:
    repo = weight_source("test_efficientnet").hf_repo
    served = pretrained_tensors("test_efficientnet", seed=12)
    hub.add_hf_file(repo, "pytorch_model.bin", served)  # an older repo without safetensors
    path, _ = fetch_weights("test_efficientnet", progress=False)
    assert path.name == "pytorch_model.bin"
    assert ("HEAD", "hub", f"/{repo}/resolve/main/model.safetensors") in hub.requests
    _assert_started_from(create_model("test_efficientnet", 2, pretrained=True), served)


def test_fetch_of_a_url_only_model_goes_to_torch_hub_checkpoints(
    hub: FakeHub, caches: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, torch_home = caches
    served = pretrained_tensors("legacy_xception", seed=13)
    point_weights_url(
        monkeypatch, "legacy_xception", hub.add_url_file(f"/files/{XCEPTION_FILE}", served)
    )
    source = weight_source("legacy_xception")
    assert source.kind == "url" and source.hf_repo is None

    path, downloaded = fetch_weights("legacy_xception", progress=False)
    assert downloaded and path == torch_home / "hub" / "checkpoints" / XCEPTION_FILE
    attempts = _no_network(monkeypatch)
    _assert_started_from(create_model("legacy_xception", 2, pretrained=True), served)
    assert attempts == []


def test_fetch_errors_name_the_backbone_source_and_fix(
    hub: FakeHub, caches: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(
        WeightsFetchError, match=r"test_convnext: downloading timm/test_convnext\.r160_in1k"
    ):
        fetch_weights("test_convnext", progress=False)  # the hub has no such repo
    hub.add_hf_file("timm/test_byobnet.r160_in1k", "README.md.safetensors", {"x": torch.zeros(1)})
    with pytest.raises(
        WeightsFetchError, match=r"has none of \['model\.safetensors', 'pytorch_model\.bin'"
    ):
        fetch_weights("test_byobnet", progress=False)
    point_weights_url(monkeypatch, "legacy_xception", hub.endpoint + "/files/absent.pth")
    with pytest.raises(
        WeightsFetchError, match=r"legacy_xception: downloading .*absent\.pth.*by hand into"
    ):
        fetch_weights("legacy_xception", progress=False)
    with pytest.raises(WeightsFetchError, match="alnet has no ImageNet weights"):
        fetch_weights("alnet")

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        WeightsFetchError, match=r"HF_HUB_OFFLINE is set.*`HF_HUB_OFFLINE=0 wen weights fetch"
    ):
        fetch_weights("test_resnet")


# -------------------------------------------------------------- timm's conversion on load


def _torchvision_tensors(builder: str, seed: int) -> dict[str, torch.Tensor]:
    """A random state dict in torchvision's layout (shapes from the model on the meta device)."""
    import torchvision

    with torch.device("meta"):
        shapes = getattr(torchvision.models, builder)().state_dict()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in shapes.items():
        if value.is_floating_point():
            out[key] = torch.rand(value.shape, generator=gen) + 0.5  # positive: valid BN variances
        else:
            out[key] = torch.zeros(value.shape, dtype=value.dtype)
    return out


def test_torchvision_densenet_file_loads_through_timm_conversion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchvision's published densenet121-a639ec97.pth predates its `norm1` names (`norm.1`)
    # and batch-norm's num_batches_tracked buffers
    tv = _torchvision_tensors("densenet121", seed=3)
    published = {
        re.sub(r"(denselayer\d+\.(?:norm|relu|conv))(\d)\.", r"\1.\2.", k): v
        for k, v in tv.items()
        if not k.endswith("num_batches_tracked")
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in published
    path = save_tensors(published, tmp_path / "densenet121-a639ec97.pth")
    attempts = _no_network(monkeypatch)
    model = create_model("densenet121", 2, pretrained=True, pretrained_path=path)
    assert attempts == []  # timm was handed the file: no download source was tried
    own = model.backbone.state_dict()
    assert set(own) == {k for k in tv if not k.startswith("classifier.")}
    for key, value in own.items():
        assert torch.equal(value, tv[key]), key


@pytest.mark.slow
def test_torchvision_vgg_file_loads_through_timm_conversion(tmp_path: Path) -> None:
    # vgg11 stands in for the study's vgg16 (528 MB): the smallest torchvision VGG (133 M
    # parameters) that timm also has, with the same classifier conversion
    tv = _torchvision_tensors("vgg11", seed=4)
    path = save_tensors(tv, tmp_path / "vgg11-8a719046.pth")
    model = create_model("vgg11", 2, pretrained=True, pretrained_path=path)
    own = model.backbone.state_dict()
    fc1 = own["pre_logits.fc1.weight"]
    assert fc1.shape == (4096, 512, 7, 7)
    assert torch.equal(fc1, tv["classifier.0.weight"].reshape(4096, 512, 7, 7))
    assert torch.equal(
        own["pre_logits.fc2.weight"], tv["classifier.3.weight"].reshape(4096, 4096, 1, 1)
    )
    assert torch.equal(own["features.0.weight"], tv["features.0.weight"])
    assert not any(k.startswith("head.fc") for k in own)  # the ImageNet classifier is gone


def test_a_file_that_fits_neither_way_names_model_and_mismatch(tmp_path: Path) -> None:
    path = save_tensors(_torchvision_tensors("densenet121", seed=5), tmp_path / "densenet121.pth")
    with pytest.raises(PretrainedWeightsError) as info:
        create_model("test_resnet", 2, pretrained_path=path)
    msg = str(info.value)
    assert "densenet121.pth do not fit test_resnet" in msg
    assert "missing tensor(s)" in msg and "timm's conversion for test_resnet" in msg
    assert "model.pretrained_path" in msg


def test_offline_message_names_the_fetch_command(caches: tuple[Path, Path]) -> None:
    with pytest.raises(PretrainedWeightsError, match=r"`wen weights fetch test_resnet`"):
        create_model("test_resnet", 2, pretrained=True)


# ------------------------------------------------------------------------ the test helper


# the study presets' backbones (tests/trainers/test_model_factory.py STUDY_BACKBONES)
@pytest.mark.parametrize(
    "name",
    ["mobilenetv1_100", "efficientnet_b0", "densenet121", "legacy_xception", "resnet50"],
)
def test_laid_out_weights_are_where_a_download_leaves_them(
    name: str, caches: tuple[Path, Path]
) -> None:
    hf_home, torch_home = caches
    tensors = lay_out_cached_weights(name, hf_home, torch_home, seed=7)
    source = weight_source(name)
    if source.hf_repo:  # huggingface_hub itself finds it without a network
        found = hf_hub_download(
            source.hf_repo,
            "model.safetensors",
            local_files_only=True,
            cache_dir=str(hf_home / "hub"),
        )
        assert Path(found) == source.cached()
    else:
        assert source.cached() == torch_home / "hub" / "checkpoints" / XCEPTION_FILE
    _assert_started_from(create_model(name, 2, pretrained=True), tensors)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["inception_resnet_v2", "vgg16"])  # 215 MB and 528 MB files
def test_laid_out_weights_of_the_large_study_backbones(
    name: str, caches: tuple[Path, Path]
) -> None:
    tensors = lay_out_cached_weights(name, *caches, seed=8)
    _assert_started_from(create_model(name, 2, pretrained=True), tensors)


# ------------------------------------------------------------------------ pre-trial check


def _config(
    backbone: str = "test_resnet",
    pretrained: bool = True,
    path: str | None = None,
    space: dict | None = None,
) -> SimpleNamespace:
    model = SimpleNamespace(backbone=backbone, pretrained=pretrained, pretrained_path=path)
    return SimpleNamespace(model=model, search=SimpleNamespace(space=space or {}))


def test_backbones_needing_weights_follow_the_space() -> None:
    grid = {"model.backbone": {"type": "grid", "values": ["vgg16", "resnet50", "vgg16"]}}
    assert backbones_needing_weights("densenet121", True, None, grid) == ["vgg16", "resnet50"]
    assert backbones_needing_weights("densenet121", True, None, {}) == ["densenet121"]
    assert backbones_needing_weights("densenet121", False, None, grid) == []
    searched = {**grid, "model.pretrained": {"type": "choice", "values": [False, True]}}
    assert backbones_needing_weights("densenet121", False, None, searched) == ["vgg16", "resnet50"]
    assert backbones_needing_weights("densenet121", True, "/w.safetensors", grid) == []


def test_missing_weight_problems_name_backbone_and_fetch_command(caches: tuple[Path, Path]) -> None:
    hf_home, torch_home = caches
    space = {
        "model.backbone": SimpleNamespace(type="choice", values=["test_resnet", "legacy_xception"])
    }
    problems = missing_weight_problems(_config(space=space))
    assert len(problems) == 2
    hf, url = problems
    assert hf.startswith("model.backbone=test_resnet:") and "`wen weights fetch test_resnet`" in hf
    assert str(hf_home / "hub" / "models--timm--test_resnet.r160_in1k") in hf
    assert (
        url.startswith("model.backbone=legacy_xception:")
        and "`wen weights fetch legacy_xception`" in url
    )
    assert f"into {torch_home / 'hub' / 'checkpoints'}/ (as {XCEPTION_FILE})" in url

    lay_out_cached_weights("test_resnet", hf_home, torch_home)
    assert [p.split(":")[0] for p in missing_weight_problems(_config(space=space))] == [
        "model.backbone=legacy_xception"
    ]
    assert missing_weight_problems(_config(pretrained=False, space=space)) == []
    assert missing_weight_problems(_config("legacy_xception", path="/w.pth")) == []
    assert missing_weight_problems(_config("test_resnet")) == []
    [alnet] = missing_weight_problems(_config("alnet"))
    assert "alnet has no ImageNet weights" in alnet and "model.pretrained=false" in alnet
    assert missing_weight_problems(_config("not_a_model_at_all")) == []  # the config checks name it
