"""The study presets (configs/*.yaml): they validate as written, dry-run, and smoke end to end."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from search.cli import app
from search.checks import load_wen_config
from search.config import WenConfig
from search.smoke import (
    SMOKE_MAX_PARAMS,
    load_smoke_config,
    smoke_backbones,
    smoke_overrides,
    smoke_trials,
)
from search.space import count_trials
from trainers.config import ConfigError
from wen_proc import REPO

PRESETS = {
    # name: (data folder the preset expects, layout, trials of the real search)
    "mondal2021": ("data/C-NMC_Leukemia", "cnmc-kaggle", 5),
    "fata2023": ("data/C-NMC_Leukemia", "cnmc-kaggle", 32),
    "jawahar2022": ("data/C-NMC_Leukemia", "cnmc-kaggle", 12),
    "alim2024": ("data/ALL4", "all4", 20),
}
runner = CliRunner()


def _preset(name: str) -> Path:
    return REPO / "configs" / f"{name}.yaml"


@pytest.fixture
def data_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding the (empty) data folders the presets point at."""
    for folder, _, _ in PRESETS.values():
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_validates_unchanged(name: str, data_folders: Path) -> None:
    config = load_wen_config(_preset(name))  # registries and searched values too
    assert isinstance(config, WenConfig)
    folder, layout, trials = PRESETS[name]
    assert config.data.root == Path(folder).absolute() and config.data.layout == layout
    assert count_trials(config.search) == trials
    text = _preset(name).read_text()
    # the header says what data it expects, how to check it, how to run it, and what smoke does
    for needle in ("wen data check", f"wen search configs/{name}.yaml", "--smoke", folder):
        assert needle in text, f"{name}: header lacks {needle!r}"


def test_preset_study_settings() -> None:
    """The settings SEEDS.md gives, as the presets hold them."""

    def load(name: str) -> WenConfig:
        c = load_wen_config(_preset(name), check_registries=False)
        assert isinstance(c, WenConfig)
        return c

    m = load("mondal2021")
    assert m.search.space["model.backbone"].values == [
        "vgg16",
        "legacy_xception",
        "mobilenetv1_100",
        "inception_resnet_v2",
        "densenet121",
    ]
    assert (m.optim.name, m.optim.lr, m.optim.betas) == ("adamax", 2e-4, (0.9, 0.999))
    assert (m.schedule.name, m.schedule.mode, m.schedule.base_lr, m.schedule.max_lr,
            m.schedule.half_cycle_epochs) == ("cyclic", "triangular2", 1e-7, 2e-3, 6.0)  # fmt: skip
    assert m.data.crop.fraction == pytest.approx(2 / 3) and m.data.balance == "oversample"
    assert m.data.augmentation == "paper" and m.data.split.method == "official"
    assert m.model.pretrained

    f = load("fata2023")
    assert f.search.space["train.epochs"].values == [10, 20, 30, 40, 50, 60, 80, 100]
    assert f.search.space["optim.name"].values == ["adam", "rmsprop"]
    assert f.search.space["model.backbone"].values == ["vgg16", "resnet50"]
    assert (f.model.head, f.optim.lr, f.data.batch_size) == ("dense512", 1e-4, 32)
    assert (f.schedule.name, f.schedule.gamma, f.schedule.decay_steps) == ("exponential", 0.95, 900)

    j = load("jawahar2022")
    assert (j.model.backbone, j.data.input_size, j.optim.name, j.optim.lr) == (
        "alnet",
        224,
        "rmsprop",
        1e-4,
    )
    assert j.train.epochs == 140 and j.search.folds == [0, 1, 2]
    assert 0.2 in j.search.space["model.dropout"].values and j.data.augmentation == "jawahar2022"

    a = load("alim2024")
    assert (a.model.backbone, a.model.head, a.data.layout) == ("resnet50", "dense_dropout", "all4")
    assert a.search.folds == [0, 1, 2, 3, 4] and a.data.split.n_folds == 5
    assert a.data.augmentation == "alim2024"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_dry_run(name: str, data_folders: Path) -> None:
    """The plan is printed; then, on empty data folders and empty weight caches, the dry run
    names the missing dataset and every backbone without weights (a full run with both
    present: tests/search/test_preset_rehearsal.py)."""
    result = runner.invoke(app, ["search", str(_preset(name)), "--dry-run", "--storage", "runs"])
    out = " ".join(result.output.split())
    assert f"trials: {PRESETS[name][2]}" in out
    assert "each trial needs: 4 CPU, 1 GPU" in out
    assert result.exit_code == 2, result.output
    assert "does not fit the dataset" in out and "is missing; this layout expects" in out
    raw = yaml.safe_load(_preset(name).read_text())
    if raw["model"]["pretrained"]:
        for backbone in raw["search"]["space"]["model.backbone"]["values"]:
            assert f"wen weights fetch {backbone}" in out, backbone
    else:
        assert "wen weights fetch" not in out
    assert not Path("runs").exists()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_smoke_dry_run_needs_no_data(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no data folders here
    result = runner.invoke(app, ["search", str(_preset(name)), "--smoke", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "SMOKE MODE" in result.output
    assert "each trial needs: 1 CPU, 0 GPU" in result.output
    assert f"run folder: {tmp_path}/runs/{name}-smoke" in result.output


def test_without_data_the_real_preset_says_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["search", str(_preset("mondal2021")), "--dry-run"])
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert f"data.root: folder '{tmp_path}/data/C-NMC_Leukemia' does not exist" in out
    assert f"relative paths are taken from the folder wen runs in, {tmp_path}" in out


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_smoke_config_is_small_synthetic_and_honest(name: str) -> None:
    smoke = load_smoke_config(str(_preset(name)))
    c = smoke.config
    _, layout, _ = PRESETS[name]
    assert c.data.root is None and c.data.synthetic is not None
    assert c.data.synthetic.layout == layout
    assert not c.model.pretrained and c.model.pretrained_path is None
    assert c.train.device == "cpu" and c.train.epochs <= 2 and c.train.max_steps_per_epoch
    assert c.search.resources.gpus == 0 and c.search.resources.cpus == 1
    assert smoke_trials(c) <= 8
    assert c.name == f"{name}-smoke"
    backbones = (
        c.search.space["model.backbone"].values if "model.backbone" in c.search.space else []
    )
    for big in ("vgg16", "inception_resnet_v2"):
        assert big not in backbones
        preset_text = _preset(name).read_text()
        if big in preset_text.split("space:")[-1]:
            assert any(big in note and "REPLACED" in note for note in smoke.notes), smoke.notes


def test_smoke_keeps_alnet_at_its_input_size() -> None:
    c = load_smoke_config(str(_preset("jawahar2022"))).config
    assert c.model.backbone == "alnet" and c.data.input_size == 224
    assert c.search.folds == [0, 1] and c.search.space["model.dropout"].values == [0.2, 0.3]


def test_smoke_squeezes_an_epoch_grid_but_keeps_it_a_grid() -> None:
    c = load_smoke_config(str(_preset("fata2023"))).config
    assert c.search.space["train.epochs"].values == [1, 2]


def test_smoke_set_overrides_apply_after_the_smoke_changes() -> None:
    c = load_smoke_config(str(_preset("mondal2021")), ["train.epochs=1"]).config
    assert c.train.epochs == 1 and c.data.synthetic is not None


def test_smoke_backbones_swaps_only_big_ones_with_distinct_stand_ins() -> None:
    names, swaps = smoke_backbones(["vgg16", "inception_resnet_v2", "densenet121"])
    assert swaps == {"vgg16": "test_resnet", "inception_resnet_v2": "test_efficientnet"}
    assert names == ["test_resnet", "test_efficientnet", "densenet121"]
    # a stand-in already in the grid is not reused
    names, swaps = smoke_backbones(["test_resnet", "vgg16"])
    assert names == ["test_resnet", "test_efficientnet"]
    assert smoke_backbones(["vgg16"], max_params=10**12) == (["vgg16"], {})
    assert SMOKE_MAX_PARAMS > 25_000_000  # resnet50 runs as itself


def test_smoke_asha_rungs_fall_on_whole_cycles() -> None:
    cfg = load_wen_config(_preset("mondal2021"), ["search.scheduler.name=asha"],
                      check_registries=False)  # fmt: skip
    assert isinstance(cfg, WenConfig)
    smoke = smoke_overrides(cfg).config
    assert smoke.search.scheduler.name == "asha" and smoke.schedule.half_cycle_epochs == 0.5


def test_every_preset_augmentation_is_registered() -> None:
    # both augmentation paths read one registry (tests/trainers/data/test_augment_paths.py)
    from trainers.data.augment import AUGMENTATIONS

    for name in ("mondal2021", "fata2023", "jawahar2022", "alim2024"):
        raw = yaml.safe_load(_preset(name).read_text())
        assert raw["data"]["augmentation"] in AUGMENTATIONS.names(), name


def test_unknown_preset_file_fails_clearly() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_smoke_config(str(REPO / "configs" / "nope.yaml"))


# ------------------------------------------------------------------------- smoke end to end


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_smoke_runs_end_to_end(name: str, tmp_path: Path, start_wen) -> None:
    expected = smoke_trials(load_smoke_config(str(_preset(name))).config)
    start = time.monotonic()
    wen = start_wen(["search", str(_preset(name)), "--smoke", "--storage", str(tmp_path)])
    code = wen.finish(timeout=840)
    seconds = time.monotonic() - start
    assert code == 0, wen.output[-4000:]
    assert "SMOKE MODE" in wen.output
    run = tmp_path / f"{name}-smoke"
    results = pd.read_csv(run / "results.csv")
    assert len(results) == expected, results
    assert (results["status"] == "TERMINATED").all(), results[["trial_id", "status", "error"]]
    for trial in results["trial_id"]:
        assert (run / "predictions" / f"{trial}.parquet").is_file(), trial
    print(f"{name} smoke: {len(results)} trials in {seconds:.0f} s")


def test_smoke_of_a_synthetic_config_keeps_its_layout() -> None:
    smoke = load_smoke_config(str(REPO / "configs" / "smoke.yaml"))
    assert smoke.config.data.synthetic is not None
    assert smoke.config.data.synthetic.layout == "cnmc-kaggle" and smoke.notes == []
    cfg = load_wen_config(REPO / "configs" / "smoke.yaml", ["data.synthetic.layout=all4",
                          "data.split.method=group_kfold"])  # fmt: skip
    assert isinstance(cfg, WenConfig)
    assert smoke_overrides(cfg).config.data.synthetic.layout == "all4"
