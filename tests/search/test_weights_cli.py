"""``wen weights fetch|list`` in-process (typer's CliRunner) against a loopback Hugging Face
hub and URL host, and the pre-trial check on the study presets' real configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from hub_cache import FakeHub, go_online, point_weights_url, pretrained_tensors, use_empty_caches
from search.cli import app
from search.checks import load_wen_config
from trainers.models import create_model
from trainers.weights import missing_weight_problems

REPO = Path(__file__).resolve().parents[2]
XCEPTION_FILE = "xception-43020ad28.pth"


def _config(tmp_path: Path, backbones: list[str], pretrained: bool = True) -> Path:
    raw = {
        "name": "weights",
        "data": {"synthetic": {"size": 32}},
        "model": {"backbone": "resnet50", "pretrained": pretrained},
        "search": {"space": {"model.backbone": {"type": "grid", "values": backbones}}},
    }
    path = tmp_path / "weights.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Empty HF_HOME and TORCH_HOME for this test, set in the environment."""
    return use_empty_caches(tmp_path, monkeypatch)


def test_fetch_a_config_then_list_it_and_train_from_it(
    tmp_path: Path, caches: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    hf_home, torch_home = caches
    config = _config(tmp_path, ["test_resnet", "legacy_xception"])
    runner = CliRunner()
    with FakeHub() as hub:
        go_online(monkeypatch, hub, hf_home, torch_home)
        resnet = pretrained_tensors("test_resnet", seed=21)
        hub.add_hf_file("timm/test_resnet.r160_in1k", "model.safetensors", resnet)
        xception = pretrained_tensors("legacy_xception", seed=22)
        url = hub.add_url_file(f"/files/{XCEPTION_FILE}", xception)
        point_weights_url(monkeypatch, "legacy_xception", url)

        before = runner.invoke(app, ["weights", "list", str(config)])
        assert before.exit_code == 1, before.output
        assert "2 of 2 backbone(s) missing" in before.output
        assert "`wen weights fetch test_resnet legacy_xception`" in before.output
        assert f"would go to {torch_home / 'hub' / 'checkpoints' / XCEPTION_FILE}" in before.output
        assert "resnet50" not in before.output.split("\n", 1)[1]  # the searched values replace it

        fetched = runner.invoke(app, ["weights", "fetch", str(config), "--no-progress"])
        assert fetched.exit_code == 0, fetched.output
        snapshot = hf_home / "hub" / "models--timm--test_resnet.r160_in1k" / "snapshots"
        assert f"test_resnet: downloaded to {snapshot}" in fetched.output
        xception_path = torch_home / "hub" / "checkpoints" / XCEPTION_FILE
        assert f"legacy_xception: downloaded to {xception_path}" in fetched.output
        served = len(hub.requests)

        again = runner.invoke(app, ["weights", "fetch", "test_resnet", str(config)])
        assert again.exit_code == 0 and again.output.count("already present") == 2, again.output
        assert len(hub.requests) == served

    after = runner.invoke(app, ["weights", "list", str(config)])
    assert after.exit_code == 0, after.output
    assert after.output.count("  present  ") == 2
    assert missing_weight_problems(load_wen_config(config, check_registries=False)) == []
    for name, tensors in (("test_resnet", resnet), ("legacy_xception", xception)):
        backbone = create_model(name, 2, pretrained=True).backbone
        for key, value in backbone.state_dict().items():
            assert torch.equal(value, tensors[key]), (name, key)


def test_fetch_failures_exit_1_with_each_reason(
    tmp_path: Path, caches: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    with FakeHub() as hub:  # serves nothing
        go_online(monkeypatch, hub, *caches)
        result = runner.invoke(
            app, ["weights", "fetch", "test_resnet", "test_convnext", "--no-progress"]
        )
    assert result.exit_code == 1
    assert "test_resnet: FAILED" in result.output and "test_convnext: FAILED" in result.output
    assert (
        "downloading timm/test_convnext.r160_in1k/model.safetensors from http://127.0.0.1"
        in result.output
    )
    bad = runner.invoke(app, ["weights", "fetch", "resnet5O"])
    assert (
        bad.exit_code == 2 and "neither a config file nor a timm model; did you mean" in bad.output
    )
    none = runner.invoke(
        app, ["weights", "list", str(_config(tmp_path, ["test_resnet"], pretrained=False))]
    )
    assert none.exit_code == 0 and "no trial starts from cached ImageNet weights" in none.output


@pytest.mark.parametrize(
    "preset,backbones",
    [
        (
            "mondal2021",
            ["vgg16", "legacy_xception", "mobilenetv1_100", "inception_resnet_v2", "densenet121"],
        ),
        ("alim2024", ["resnet50", "vgg16", "densenet121", "efficientnet_b0"]),
        ("jawahar2022", []),
    ],
)
def test_pre_trial_check_on_the_presets(
    preset: str, backbones: list[str], caches: tuple[Path, Path]
) -> None:
    cfg = load_wen_config(REPO / "configs" / f"{preset}.yaml", check_registries=False)
    problems = missing_weight_problems(cfg)
    assert [p.split(":")[0] for p in problems] == [f"model.backbone={b}" for b in backbones]
    for name, problem in zip(backbones, problems):
        assert f"`wen weights fetch {name}`" in problem
