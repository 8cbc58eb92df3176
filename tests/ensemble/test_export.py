"""Export and predict: a real run of tiny trained networks, exported and checked end to end.

The run (``trained_run``) is built with the stages' real writers: four trials trained by
``trainers.train`` (two configurations x official folds 0 and 1, so each member averages two
fold networks), published into ``RUN/models/`` by the search stage's ``_publish``, then
``ensemble.run_ensemble``. Parity is checked three ways: onnxruntime vs TorchScript vs eager
PyTorch on random inputs, and ``wen predict`` on the test images against the ensemble's test
probabilities recomputed from the members' prediction files.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from ensemble import EnsembleSettings, ExportError, export_ensemble, predict_images, run_ensemble
from ensemble._graph import MemberNet, StackingEnsemble, WeightedEnsemble, create_ensemble_module
from ensemble.combiners import Combiner
from ensemble.export import load_ensemble_module, load_export_spec
from ensemble.members import build_members, load_prediction_sets
from ensemble.methods import METHODS, MethodOptions, Stacking, create_method
from ensemble.predict import prob_column
from search.cli import app
from trainers.models import create_model
from trainers.trained import TrainedModelError, load_trained_model

pytestmark = pytest.mark.timeout(300)

# (member label, backbone, seed): each trained on official folds 0 and 1
CONFIGS = (("res", "test_resnet", 7), ("eff", "test_efficientnet", 3))
ATOL = 1e-4


def _tiny_trial(**data: Any) -> dict[str, Any]:
    """``tests/faults/fault_helpers.py: tiny_trial`` (that folder is not on sys.path here)."""
    module = sys.modules.get("fault_helpers")
    if module is None:
        spec = importlib.util.spec_from_file_location(
            "fault_helpers", Path(__file__).resolve().parents[1] / "faults" / "fault_helpers.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["fault_helpers"] = module
    return module.tiny_trial(**data)


def _trial_config(dataset: Path, backbone: str, seed: int, fold: int) -> Any:
    from trainers.config import TrialConfig

    raw = _tiny_trial(
        synthetic_dir=str(dataset), cache=False, split={"method": "official", "fold": fold}
    )
    raw["data"]["synthetic"].update(subjects_per_class=6, cells_per_subject=3)
    raw["data"]["crop"] = {"fraction": 0.8}
    raw["model"]["backbone"] = backbone
    raw["seed"] = seed
    # a high learning rate so two epochs give confident, image-dependent probabilities
    raw["schedule"].update(base_lr=1e-3, max_lr=3e-2)
    return TrialConfig.model_validate(raw)


def _build_run(root: Path) -> Path:
    """RUN with models/, predictions/ and ensemble/ from real training (see module docs)."""
    from search.storage import RunStorage
    from search.trainable import _publish
    from trainers.loop import train

    storage = RunStorage.open(str(root), "run")
    run = root / "run"
    for label, backbone, seed in CONFIGS:
        for fold in (0, 1):
            config = _trial_config(root / "dataset", backbone, seed, fold)
            trial_id = f"{label}-f{fold}"
            result = train(
                config,
                out_dir=root / "work" / trial_id,
                trial_id=trial_id,
                predictions_dir=run / "predictions",
            )
            _publish(storage, result, config, trial_id, result.predictions_path)
    # the parity tests compare exported graphs with the fitted methods' own probabilities:
    # no temperature (test_predict_reproduces_the_operating_point_on_test fits one)
    settings = EnsembleSettings(
        bootstrap=50, n_trials=10, crossfit_folds=2, seed=0, temperature_scaling=False
    )
    with warnings.catch_warnings():
        # two-epoch networks: a member's kappa can be <= 0, which wen_kappa warns about
        warnings.simplefilter("ignore", UserWarning)
        run_ensemble(run, settings, say=lambda _msg: None)
    return run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_run(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def sap_model(trained_run: Path) -> Path:
    """``wen export RUN --method sap --out ...`` through the CLI."""
    out = trained_run.parent / "sap_model"
    result = CliRunner().invoke(
        app, ["export", str(trained_run), "--method", "sap", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def stacking_model(trained_run: Path) -> Path:
    return export_ensemble(
        trained_run, "stacking", trained_run.parent / "stacking_model", say=lambda _msg: None
    )


def _dataset(run: Path) -> Path:
    return run.parent / "dataset"


def _members_test(run: Path) -> dict[str, Any]:
    """Each member's test probabilities as ``wen ensemble`` builds them (fold means)."""
    members = build_members(load_prediction_sets(run / "predictions"), say=lambda _m: None)
    return {m.name: m.test for m in members}


def _predicted(table: pd.DataFrame, classes: list[str], dataset: Path) -> pd.DataFrame:
    table = table.copy()
    table["sample_id"] = [
        Path(p).resolve().relative_to(dataset.resolve()).as_posix() for p in table["path"]
    ]
    return table.set_index("sample_id")[[prob_column(c) for c in classes]]


def _test_folders(ids: Any, dataset: Path) -> list[Path]:
    """The folders holding the test images (the layout decides where they live)."""
    return sorted({(dataset / i).parent for i in ids})


# ------------------------------------------------------------------------- fast unit tests


def _member_nets(n_members: int, n_classes: int, size: int = 4) -> list[MemberNet]:
    torch.manual_seed(0)
    nets = []
    for _ in range(n_members):
        folds = [
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * size * size, n_classes))
            for _ in range(2)
        ]
        nets.append(MemberNet(folds, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), size, size))
    return nets


@pytest.mark.parametrize("n_classes", [2, 3])
def test_graph_matches_the_fitted_methods(n_classes: int) -> None:
    """The graph's weighted mix and stacker equal ``predict_proba`` of the fitted methods."""
    nets = _member_nets(3, n_classes)
    x = torch.rand(40, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        P = torch.stack([m(x) for m in nets]).double().numpy()  # [members, n, k]
    y = np.arange(40) % n_classes
    # fold averaging: each member's probability is the mean of its fold networks' softmax
    with torch.no_grad():
        m0 = nets[0]
        x0 = (x - m0.mean) / m0.std
        folds = [torch.softmax(f(x0), 1) for f in m0.folds]
    np.testing.assert_allclose(P[0], torch.stack(folds).mean(0).numpy(), atol=1e-7)

    wen = create_method("wen_acc").fit(P, y)
    weighted = WeightedEnsemble(nets, wen.weights_.tolist()).eval()
    with torch.no_grad():
        np.testing.assert_allclose(weighted(x).numpy(), wen.predict_proba(P), atol=1e-6)

    stack = Stacking().fit(P, y)
    graph = StackingEnsemble(
        nets, stack.stacker_.coef_.tolist(), stack.stacker_.intercept_.tolist(), n_classes
    ).eval()
    with torch.no_grad():
        np.testing.assert_allclose(graph(x).numpy(), stack.predict_proba(P), atol=1e-5)
    with pytest.raises(ValueError, match="stacking coef must be"):
        StackingEnsemble(nets, [[1.0]], [0.0], n_classes)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_every_method_exports_through_its_combiner(n_classes: int) -> None:
    """Each registered method's graph, built from its combiner alone (as weights.json and the
    manifest store it, never from its name), equals its fitted ``predict_proba``."""
    nets = _member_nets(3, n_classes)
    x = torch.rand(40, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        P = torch.stack([m(x) for m in nets]).double().numpy()
    y = np.arange(40) % n_classes
    options = MethodOptions(class_names=None, n_trials=12, greedy_rounds=5)
    kinds = set()
    for name in METHODS:
        method = create_method(name, options).fit(P, y)
        spec = Combiner.from_json(json.loads(json.dumps(method.combiner().to_json())))
        kinds.add(spec.kind)
        graph = create_ensemble_module(nets, spec, method.weights_.tolist(), n_classes)
        with torch.no_grad():
            np.testing.assert_allclose(
                graph(x).numpy(), method.predict_proba(P), atol=1e-5, err_msg=name
            )
    assert kinds == {"weighted_average", "logistic_stacker"}
    with pytest.raises(ValueError, match="unknown ensemble combiner 'magic'"):
        create_ensemble_module(nets, Combiner("magic", "", ""), [1.0] * 3, n_classes)


def test_wrong_weights_file_is_refused(tmp_path: Path) -> None:
    """Weights of another backbone under a trial's config: the error names file and tensors."""
    from safetensors.torch import save_file

    config = _trial_config(tmp_path / "dataset", "test_resnet", 0, 0)  # nothing is generated
    meta = {
        "trial_id": "t",
        "class_names": ["hem", "all"],
        "config": config.model_dump(mode="json"),
    }
    other = create_model("test_resnet", 3)  # right backbone, wrong number of classes
    save_file(
        {k: v.contiguous() for k, v in other.state_dict().items()},
        str(tmp_path / "model.safetensors"),
    )
    with pytest.raises(
        TrainedModelError,
        match=r"model\.safetensors does not fit test_resnet.*"
        r"wrong shape.*head\.0\.weight \(file \(3, ",
    ):
        load_trained_model(meta, tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(TrainedModelError, match="not a readable safetensors file"):
        load_trained_model(meta, tmp_path / "model.safetensors")


def test_export_without_ensemble_says_run_wen_ensemble(tmp_path: Path) -> None:
    (tmp_path / "predictions").mkdir()
    with pytest.raises(ExportError, match=r"run `wen ensemble .*` first"):
        export_ensemble(tmp_path)
    result = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 2
    assert "wen ensemble" in result.output


def test_predict_refuses_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["predict", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 2
    assert "manifest.json does not exist" in result.output and "wen export" in result.output


# --------------------------------------------------------------------- the real trained run


@pytest.mark.slow
def test_spec_defaults_to_chosen_and_drops_zero_weights(trained_run: Path) -> None:
    chosen = json.loads((trained_run / "ensemble" / "chosen.json").read_text())
    assert load_export_spec(trained_run).method == chosen["method"]
    best = load_export_spec(trained_run, "best_single")
    assert len(best.members) == 1 and len(best.dropped) == 1
    assert best.dropped[0]["weight"] == 0 and "left out of the graph" in best.dropped[0]["why"]
    stacking = load_export_spec(trained_run, "stacking")
    assert (
        len(stacking.members) == 2 and stacking.combiner.params["coef"]
    )  # importances, never dropped


@pytest.mark.slow
def test_unknown_method_lists_the_fitted_ones(trained_run: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(trained_run), "--method", "magic"])
    assert result.exit_code == 2
    assert "unknown method 'magic'" in result.output
    for name in ("sap", "wen_kappa", "stacking", "best_single"):
        assert name in result.output
    busy = trained_run.parent / "not_a_model"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an exported model folder"):
        export_ensemble(trained_run, "sap", busy, say=lambda _m: None)
    assert (busy / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_export_parity_onnxruntime_torchscript_pytorch(
    sap_model: Path, stacking_model: Path
) -> None:
    for model_dir in (sap_model, stacking_model):
        manifest = json.loads((model_dir / "manifest.json").read_text())
        size = manifest["input"]["shape"][-1]
        eager = load_ensemble_module(model_dir)
        import onnxruntime as ort

        session = ort.InferenceSession(
            str(model_dir / "ensemble.onnx"), providers=["CPUExecutionProvider"]
        )
        with pytest.warns(FutureWarning):  # torch.jit is deprecated; our own file is loaded
            scripted = torch.jit.load(str(model_dir / "ensemble.pt"))
        gen = torch.Generator().manual_seed(5)
        for batch in (1, 5):  # one graph, dynamic batch
            x = torch.rand(batch, 3, size, size, generator=gen)
            with torch.no_grad():
                ref = eager(x).numpy()
                ts = scripted(x).numpy()
            ort_out = session.run(["probs"], {"image": x.numpy()})[0]
            assert ort_out.shape == ref.shape == (batch, 2)
            np.testing.assert_allclose(ort_out, ref, atol=ATOL, rtol=0)
            np.testing.assert_allclose(ts, ref, atol=ATOL, rtol=0)
            np.testing.assert_allclose(ref.sum(1), 1.0, atol=1e-5)
        assert np.ptp(ref[:, 1]) > 1e-3, "outputs do not depend on the input: parity is vacuous"
        assert max(manifest["parity"]["max_abs_diff_vs_eager"].values()) <= ATOL


@pytest.mark.slow
def test_manifest_describes_model_and_preprocessing(trained_run: Path, sap_model: Path) -> None:
    manifest = json.loads((sap_model / "manifest.json").read_text())
    config = _trial_config(_dataset(trained_run), "test_resnet", 7, 0)
    assert manifest["method"] == "sap" and manifest["class_names"] == ["hem", "all"]
    prep = manifest["preprocessing"]
    assert prep["crop"]["fraction"] == config.data.crop.fraction == 0.8
    assert prep["resize"] == {
        "size": [32, 32],
        "interpolation": "bilinear",
        "antialias": True,
        "library": "PIL.Image.resize(..., Image.Resampling.BILINEAR)",
    }
    assert prep["channel_order"] == "RGB" and manifest["input"]["shape"] == ["batch", 3, 32, 32]
    members = {m["backbone"]: m for m in manifest["members"]}
    assert set(members) == {"test_resnet", "test_efficientnet"}
    for label, backbone, _ in CONFIGS:
        m = members[backbone]
        assert m["weight"] == pytest.approx(0.5) and m["trial_ids"] == [
            f"{label}-f0",
            f"{label}-f1",
        ]
        assert len(m["mean"]) == len(m["std"]) == 3
        for f in m["files"]:
            assert (sap_model / f["weights"]).is_file() and (sap_model / f["config"]).is_file()
    table = pd.read_csv(trained_run / "ensemble" / "comparison.csv")
    row = table[(table["method"] == "sap") & (table["split"] == "test")].iloc[0]
    test = manifest["metrics"]["test"]
    assert test["wfs"]["value"] == pytest.approx(row["wfs"])
    assert test["wfs"]["low"] == pytest.approx(row["wfs_low"])
    assert test["auc"]["high"] == pytest.approx(row["auc_high"])
    assert {"val", "val_crossfit", "test"} <= set(manifest["metrics"])
    assert manifest["versions"]["torch"] == torch.__version__.split("+")[0] or manifest["versions"][
        "torch"
    ].startswith(torch.__version__.split("+")[0])
    assert manifest["versions"]["onnxruntime"]
    assert manifest["files"]["onnx_opset"]["ai.onnx"] >= 17


@pytest.mark.slow
def test_predict_equals_ensemble_test_probabilities(
    trained_run: Path, sap_model: Path, tmp_path: Path
) -> None:
    """Probabilities of ``wen predict`` on the raw test images equal the ensemble's test
    probabilities from the members' prediction files: the manifest's pre-processing is the
    training pre-processing, and the graph combines folds and members as ``wen ensemble``."""
    dataset = _dataset(trained_run)
    manifest = json.loads((sap_model / "manifest.json").read_text())
    tests = _members_test(trained_run)
    w = np.array([m["weight"] for m in manifest["members"]])
    P = np.stack([tests[m["name"]].P[0] for m in manifest["members"]])
    mix = np.tensordot(w, P, axes=1)
    expected = mix / mix.sum(axis=1, keepdims=True)
    ids = tests[manifest["members"][0]["name"]].sample_ids
    folders = _test_folders(ids, dataset)

    out = tmp_path / "preds.csv"
    result = CliRunner().invoke(
        app, ["predict", str(sap_model), *map(str, folders), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["path", "prob_hem", "prob_all", "predicted", "error"]
    got = _predicted(table, ["hem", "all"], dataset)
    assert len(ids) >= 6 and set(ids) <= set(got.index)
    np.testing.assert_allclose(got.loc[list(ids)].to_numpy(), expected, atol=ATOL, rtol=0)
    assert np.ptp(expected[:, 1]) > 1e-2  # images differ: a wrong crop or scale would show

    # the negative control: without the centre crop the same images give other probabilities
    torch_table = predict_images(sap_model, folders, backend="torch")
    np.testing.assert_allclose(
        _predicted(torch_table, ["hem", "all"], dataset).loc[list(ids)], expected, atol=ATOL, rtol=0
    )
    from trainers.data.cache import preprocess_image

    eager = load_ensemble_module(sap_model)
    uncropped = np.stack([preprocess_image(dataset / i, None, 32) for i in ids])
    with torch.no_grad():
        wrong = eager(torch.from_numpy(uncropped).permute(0, 3, 1, 2).float() / 255).numpy()
    assert np.abs(wrong - expected).max() > 10 * ATOL


@pytest.mark.slow
def test_predict_stacking_equals_the_fitted_stacker(
    trained_run: Path, stacking_model: Path
) -> None:
    from sklearn.linear_model import LogisticRegression

    dataset = _dataset(trained_run)
    manifest = json.loads((stacking_model / "manifest.json").read_text())
    tests = _members_test(trained_run)
    ids = list(tests[manifest["members"][0]["name"]].sample_ids)
    table = predict_images(stacking_model, _test_folders(ids, dataset))
    got = _predicted(table, ["hem", "all"], dataset)
    P = np.stack([tests[m["name"]].P[0] for m in manifest["members"]])
    lr = LogisticRegression()
    stacker = manifest["combiner"]
    assert stacker["kind"] == "logistic_stacker" and stacker["keeps_zero_weight_members"]
    lr.coef_ = np.array(stacker["params"]["coef"])
    lr.intercept_ = np.array(stacker["params"]["intercept"])
    lr.classes_ = np.array([0, 1])
    expected = lr.predict_proba(Stacking()._features(P))
    np.testing.assert_allclose(got.loc[ids].to_numpy(), expected, atol=ATOL, rtol=0)
    threshold = manifest["threshold"]
    if threshold is not None:
        want = np.where(expected[:, 1] >= threshold, "all", "hem")
        assert list(table.set_index(got.index)["predicted"].loc[ids]) == list(want)


@pytest.mark.slow
def test_predict_lists_bad_images_and_keeps_good_rows(
    trained_run: Path, sap_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(_dataset(trained_run).rglob("*.bmp"))[:3]
    for p in good:
        shutil.copyfile(p, folder / p.name)
    (folder / "notes.png").write_text("this is not an image")
    Image.new("RGB", (120, 120), "white").save(folder / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 40x40 cells pass, 120x120 is a bomb

    out = tmp_path / "preds.csv"
    result = CliRunner().invoke(
        app, ["predict", str(sap_model), str(folder), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 1
    assert "huge.png: decompression bomb refused" in result.output
    assert "notes.png: not a readable image" in result.output
    table = pd.read_csv(out)
    assert len(table) == 5
    ok = table[table["error"].isna()]
    assert sorted(Path(p).name for p in ok["path"]) == sorted(p.name for p in good)
    assert ok[["prob_hem", "prob_all"]].notna().all().all()
    assert set(ok["predicted"]) <= {"hem", "all"}

    result = CliRunner().invoke(
        app,
        ["predict", str(sap_model), str(folder), "--out", str(out), "--no-progress", "--skip-bad"],
    )
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output
    assert len(pd.read_csv(out)) == 3


@pytest.mark.slow
def test_export_refuses_a_wrong_member_weights_file(trained_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    for part in ("ensemble", "models"):
        shutil.copytree(trained_run / part, run / part)
    shutil.copyfile(
        run / "models" / "eff-f0" / "model.safetensors",
        run / "models" / "res-f1" / "model.safetensors",
    )
    with pytest.raises(
        ExportError,
        match=r"member res-f0\+res-f1 \(trial res-f1\): .*"
        r"model\.safetensors does not fit test_resnet",
    ):
        export_ensemble(run, "sap", say=lambda _m: None)
    assert not (run / "model").exists()


@pytest.mark.slow
def test_predict_reproduces_the_operating_point_on_test(trained_run: Path, tmp_path: Path) -> None:
    """With ``ensemble.operating_point: youden`` the export carries the threshold chosen on
    validation, and ``wen predict`` on the raw test images gives exactly the test sensitivity
    and specificity that ``chosen.json`` and operating_points.csv report."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("ensemble", "model"))
    (run.parent / "dataset").symlink_to(_dataset(trained_run).resolve())
    settings = EnsembleSettings(bootstrap=50, n_trials=10, crossfit_folds=2, seed=0,
                                operating_point="youden", temperature_scaling=True)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_ensemble(run, settings, say=lambda _msg: None)
    chosen = json.loads((run / "ensemble" / "chosen.json").read_text())
    point = chosen["operating_point"]
    assert point["rule"] == "youden" and chosen["threshold"] == point["threshold"]
    table = pd.read_csv(run / "ensemble" / "operating_points.csv")
    assert set(table["rule"]) == {"argmax", "youden", "sensitivity"}
    assert table.loc[table["chosen"], "rule"].tolist() == ["youden"]
    model = export_ensemble(run, out_dir=tmp_path / "model", say=lambda _m: None)
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["threshold"] == point["threshold"]
    assert "Youden" in manifest["decision"] and manifest["operating_point"]["rule"] == "youden"
    # the temperature fitted on held-out validation is in the graph and the manifest
    assert manifest["temperature"] == chosen["temperature"] and chosen["temperature"] > 0
    assert "softmax(log p / T)" in manifest["combine"]
    calibration = pd.read_csv(run / "ensemble" / "calibration.csv")
    assert calibration["stage"].tolist() == ["before", "after"]
    assert (calibration["ece_low"] <= calibration["ece"] + 1e-12).all()

    dataset = _dataset(trained_run)
    truth = next(iter(_members_test(run).values()))
    labels = dict(zip(truth.sample_ids, truth.y))
    result = CliRunner().invoke(app, ["predict", str(model), *map(str, _test_folders(truth.sample_ids, dataset)),
                                      "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Youden" in result.output  # the decision rule is said
    rows = pd.read_csv(io.StringIO(result.stdout))
    rows["sample_id"] = [Path(p).resolve().relative_to(dataset.resolve()).as_posix()
                         for p in rows["path"]]  # fmt: skip
    rows = rows[rows["sample_id"].isin(labels)]
    y = np.array([labels[s] for s in rows["sample_id"]])
    called = (rows["predicted"] == "all").to_numpy()
    assert len(rows) == len(labels)
    assert (called & (y == 1)).sum() / (y == 1).sum() == pytest.approx(point["test_sensitivity"][0])
    assert (~called & (y == 0)).sum() / (y == 0).sum() == pytest.approx(
        point["test_specificity"][0]
    )
