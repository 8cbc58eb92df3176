"""``wen data synth | check | manifest`` through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from search.cli import app
from trainers.data.layouts import load_manifest_file, manifest_hash, read_manifest

runner = CliRunner()


def _synth(out: Path, layout: str, *extra: str) -> None:
    result = runner.invoke(
        app,
        [
            "data",
            "synth",
            str(out),
            "--layout",
            layout,
            "--subjects-per-class",
            "4",
            "--cells-per-subject",
            "3",
            "--size",
            "32",
            "--seed",
            "3",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output


@pytest.mark.parametrize("layout", ["cnmc-kaggle", "cnmc-tcia", "all4", "imagefolder"])
def test_synth_then_check_is_clean(tmp_path: Path, layout: str) -> None:
    _synth(tmp_path / "d", layout)
    result = runner.invoke(app, ["data", "check", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert f"layout  {layout}" in result.output
    assert "OK: 0 error(s), 0 warning(s)" in result.output
    args = ["data", "check", str(tmp_path / "d"), "--layout", layout, "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["layout"] == layout and report["problems"] == [] and report["counts"]


def test_check_exits_1_and_names_the_file_on_errors(tmp_path: Path) -> None:
    _synth(tmp_path / "d", "all4")
    bad = sorted((tmp_path / "d" / "Original" / "Early").glob("*.jpg"))[0]
    bad.write_bytes(b"")
    result = runner.invoke(app, ["data", "check", str(tmp_path / "d")])
    assert result.exit_code == 1
    assert f"ERROR    Original/Early/{bad.name}: empty file" in result.output
    result = runner.invoke(app, ["data", "check", str(tmp_path / "d"), "--json"])
    assert result.exit_code == 1
    problems = json.loads(result.output)["problems"]
    assert [p["path"] for p in problems] == [f"Original/Early/{bad.name}"]


def test_synth_label_noise_is_reported(tmp_path: Path) -> None:
    _synth(tmp_path / "d", "imagefolder", "--label-noise", "0.25")
    info = json.loads((tmp_path / "d" / ".wen-synthetic.json").read_text())
    assert info["n_flipped"] == round(0.25 * info["n_labelled"]) == 6


def test_synth_preset_prints_and_records_its_ceiling(tmp_path: Path) -> None:
    args = ["data", "synth", str(tmp_path / "d"), "--preset", "complementary", "--size", "32",
            "--subjects-per-class", "4", "--cells-per-subject", "2"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "d" / ".wen-synthetic.json").read_text())
    assert info["preset"] == "complementary"
    assert f"AUC {info['ceiling']['auc']:.3f}" in result.output
    bad = runner.invoke(app, ["data", "synth", str(tmp_path / "e"), "--preset", "hard"])
    assert bad.exit_code == 2 and "complementary" in bad.output


def test_synth_rejects_bad_values_with_a_clear_message(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "synth", str(tmp_path / "a"), "--size", "8"])
    assert result.exit_code == 2 and "size" in result.output and "16" in result.output
    args = ["data", "synth", str(tmp_path / "b"), "--layout", "cnmc-tcia"]
    result = runner.invoke(app, [*args, "--subjects-per-class", "2"])
    assert result.exit_code == 2 and "subjects_per_class >= 4" in result.output
    result = runner.invoke(app, ["data", "synth", str(tmp_path / "c"), "--layout", "mnist"])
    assert result.exit_code == 2


def test_check_and_manifest_refuse_unknown_layouts_and_folders(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "not a folder" in result.output
    result = runner.invoke(app, ["data", "check", str(tmp_path), "--layout", "cnmc"])
    assert result.exit_code == 2 and "valid names" in result.output
    (tmp_path / "plain").mkdir()
    result = runner.invoke(app, ["data", "manifest", str(tmp_path / "plain")])
    assert result.exit_code == 2 and "cannot tell the layout" in result.output


def test_manifest_writes_parquet_and_csv(tmp_path: Path) -> None:
    _synth(tmp_path / "d", "cnmc-kaggle")
    out = tmp_path / "m" / "manifest.parquet"
    result = runner.invoke(app, ["data", "manifest", str(tmp_path / "d"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    loaded = load_manifest_file(out)
    direct = read_manifest(tmp_path / "d")
    assert loaded.layout == "cnmc-kaggle"
    assert manifest_hash(loaded.frame) == manifest_hash(direct.frame)
    assert manifest_hash(direct.frame) in result.output
    manifest_cmd = ["data", "manifest", str(tmp_path / "d"), "--out"]
    result = runner.invoke(app, [*manifest_cmd, str(tmp_path / "m.csv")])
    assert result.exit_code == 0
    table = pd.read_csv(tmp_path / "m.csv")
    assert list(table.sample_id) == list(direct.frame.sample_id)
    result = runner.invoke(app, [*manifest_cmd, str(tmp_path / "m.txt")])
    assert result.exit_code == 2 and ".parquet or .csv" in result.output
