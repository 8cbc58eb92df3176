"""The driver checks the config against the dataset before any trial (and ``--dry-run``
prints it): folds that exist, class weights per class, subjects per split, and a dataset one
folder down as an archive unzips."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from search.cli import app
from search.preflight import plan_dataset
from search.run import SearchError, load_search_config, run_search
from trainers.data.synth import synthesize
from wen_proc import SMOKE

runner = CliRunner()


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(
        tmp_path_factory.mktemp("ds") / "C-NMC_Leukemia", "cnmc-kaggle", 4, 4, 32, seed=3
    )


def _args(root: Path, *more: str) -> list[str]:
    out = [
        "--set",
        "data.synthetic=null",
        "--set",
        f"data.root={root}",
        "--set",
        "data.layout=auto",
    ]
    for item in more:
        out += ["--set", item]
    return out


def test_folds_the_dataset_lacks_stop_the_dry_run(kaggle: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["search", str(SMOKE), "--dry-run", "--storage", str(tmp_path),
              *_args(kaggle, "search.folds=[0, 7]")],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert (
        "search.folds=7: data.split.fold=7 is not one of the dataset's folds [0, 1, 2]"
        in result.output
    )
    assert "fold 0: train: hem" in result.output  # the fold that exists is shown
    assert not list(tmp_path.iterdir())


def test_the_search_refuses_before_ray_starts(kaggle: Path, tmp_path: Path) -> None:
    config = load_search_config(str(SMOKE), [f"data.root={kaggle}", "data.synthetic=null",
                                             "search.folds=[0, 7]"])  # fmt: skip
    with pytest.raises(
        SearchError, match=r"does not fit the dataset or the weight caches:\n  - search.folds=7"
    ):
        run_search(config, storage=str(tmp_path), name="x", say=lambda _: None)
    assert not (tmp_path / "x").exists()  # no run folder, no Ray


def test_class_weights_per_class_and_subjects_per_split(kaggle: Path) -> None:
    config = load_search_config(str(SMOKE), [
        f"data.root={kaggle}", "data.synthetic=null", "data.split.method=group_kfold",
        "data.split.n_folds=3", "search.folds=[0, 2]", "loss.class_weights=[1.0, 2.0, 3.0]",
    ])  # fmt: skip
    plan = plan_dataset(config)
    [problem] = plan.problems
    assert "class_weights has 3 value(s) but the dataset has 2 classes (hem, all)" in problem
    assert [f.fold for f in plan.folds] == [0, 2]
    for fold in plan.folds:
        assert fold.subjects["val"]["all"] >= 1 and fold.subjects["train"]["hem"] >= 1
        assert fold.subjects["test"] == {"hem": 1, "all": 1}  # the dataset's own labelled test set


def test_a_download_folder_holding_the_dataset_is_used_one_level_down(
    kaggle: Path, tmp_path: Path
) -> None:
    download = tmp_path / "download"
    shutil.copytree(kaggle, download / "C-NMC_Leukemia")
    result = runner.invoke(app, ["search", str(SMOKE), "--dry-run", *_args(download)])
    assert result.exit_code == 0, result.output
    assert "holds a single dataset folder" in result.output
    assert f"dataset: {download / 'C-NMC_Leukemia'} (cnmc-kaggle" in result.output
    config = load_search_config(str(SMOKE), [f"data.root={download}", "data.synthetic=null"])
    plan = plan_dataset(config)
    assert not plan.problems and config.data.root == download / "C-NMC_Leukemia"


def test_a_backbone_without_cached_weights_stops_the_search_before_any_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub_cache import cache_env, lay_out_cached_weights

    hf, th = tmp_path / "hf", tmp_path / "torch"
    lay_out_cached_weights("test_resnet", hf, th)  # test_efficientnet's weights are missing
    for key, value in cache_env(hf, th).items():
        monkeypatch.setenv(key, value)
    config = load_search_config(str(SMOKE), ["model.pretrained=true"])
    with pytest.raises(SearchError) as caught:
        run_search(config, storage=str(tmp_path / "runs"), name="w", say=lambda _: None)
    text = str(caught.value)
    assert (
        "model.backbone=test_efficientnet" in text and "wen weights fetch test_efficientnet" in text
    )
    assert "test_resnet" not in text.replace("test_resnet.", "")  # the cached one is not named
    assert not (tmp_path / "runs" / "w").exists()
    result = runner.invoke(
        app, ["search", str(SMOKE), "--dry-run", "--set", "model.pretrained=true"]
    )
    assert result.exit_code == 2 and "wen weights fetch test_efficientnet" in result.output
