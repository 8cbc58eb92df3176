"""Faults 6, 7 and 11: bad prediction files, bad images and hostile dataset inputs.

The units (one reader, one check) are tested in tests/trainers and tests/ensemble; here each
fault goes through the command a user runs (``wen ensemble``, ``wen data check``) and through
training, with several faults planted at once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from fault_helpers import tiny_trial
from search.cli import app
from trainers import load_config, train
from trainers.data.errors import DataError
from trainers.data.synth import synthesize

ENSEMBLE_FAST = [
    "--n-trials",
    "3",
    "--methods",
    "sap,wen_kappa",
    "--bootstrap",
    "10",
    "--no-progress",
]


# ------------------------------------------------------------------ 6: bad prediction files


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rename_label_column(path: Path) -> None:
    table = pq.read_table(path)
    names = ["target" if n == "label" else n for n in table.column_names]
    pq.write_table(table.rename_columns(names), path)


def _string_labels(path: Path) -> None:
    table = pq.read_table(path)
    i = table.column_names.index("label")
    pq.write_table(table.set_column(i, "label", table.column("label").cast("string")), path)


@pytest.mark.parametrize(
    "damage",
    [_truncate, _rename_label_column, _string_labels],
    ids=["truncated", "missing-column", "wrong-column-type"],
)
def test_bad_prediction_file_is_named_and_never_used_silently(prediction_run: Path, damage) -> None:
    bad = prediction_run / "predictions" / "t004.parquet"
    damage(bad)
    stop = CliRunner().invoke(app, ["ensemble", str(prediction_run), *ENSEMBLE_FAST])
    assert stop.exit_code == 2, stop.output
    assert "t004.parquet" in stop.output and "--skip-bad-files" in stop.output
    assert not (
        prediction_run / "ensemble" / "comparison.csv"
    ).exists()  # stopped before any output

    skip = CliRunner().invoke(
        app, ["ensemble", str(prediction_run), "--skip-bad-files", *ENSEMBLE_FAST]
    )
    assert skip.exit_code == 0, skip.output
    assert f"skipping bad prediction file {bad}" in skip.output
    # t005 (the other fold of t004's configuration) is left out too, and said so
    assert "skipping trial t005" in skip.output
    members = pd.read_csv(prediction_run / "ensemble" / "members.csv")
    trials = sorted(t for ids in members["trial_ids"] for t in ids.split(";"))
    assert trials == [f"t{i:03d}" for i in range(12) if i not in (4, 5)]
    chosen = json.loads((prediction_run / "ensemble" / "chosen.json").read_text())
    assert "t004" not in json.dumps(chosen)


# ----------------------------------------------------- 7 + 11: bad and hostile image files


@pytest.fixture(scope="module")
def damaged_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A C-NMC (kaggle layout) dataset with one file of each kind of damage."""
    root = synthesize(tmp_path_factory.mktemp("damaged") / "data", "cnmc-kaggle", 4, 5, 40, seed=1)
    files = {
        cls: sorted((root / "training_data").glob(f"fold_*/{cls}/*.bmp")) for cls in ("all", "hem")
    }
    victims = {
        "zero-byte": files["all"][0],
        "truncated": files["all"][3],
        "corrupt": files["hem"][0],
        "non-image": files["all"][6],
        "bomb": files["hem"][3],
    }
    victims["zero-byte"].write_bytes(b"")
    data = victims["truncated"].read_bytes()
    victims["truncated"].write_bytes(data[: len(data) * 2 // 3])
    data = bytearray(victims["corrupt"].read_bytes())
    data[:14] = b"\x00" * 14  # the BMP file header wiped: no decoder recognises the file
    victims["corrupt"].write_bytes(bytes(data))
    victims["non-image"].write_text("Patient notes, not a picture")
    Image.new("RGB", (400, 400)).save(victims["bomb"], format="BMP")  # > 2 x the limit set below
    # mislabelled: a Hem cell (its name says hem) filed under all/
    source = files["hem"][6]
    victims["mislabelled"] = source.parent.parent / "all" / source.name
    source.rename(victims["mislabelled"])
    return root, victims


@pytest.fixture
def bomb_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """PIL's decompression-bomb limit lowered so a 400x400 image counts as a bomb."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_data_check_reports_every_damaged_file(damaged_dataset, bomb_limit) -> None:
    root, victims = damaged_dataset
    result = CliRunner().invoke(app, ["data", "check", str(root), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    errors = {p["path"]: p["problem"] for p in report["problems"] if p["severity"] == "error"}
    expect = {
        "zero-byte": "0 bytes",
        "truncated": "truncated",
        "corrupt": "not an image",
        "non-image": "not an image",
        "bomb": "decompression bomb",
        "mislabelled": "disagrees",
    }
    for kind, path in victims.items():
        rel = path.relative_to(root).as_posix()
        assert rel in errors, f"{kind}: {rel} not reported; got {sorted(errors)}"
        assert expect[kind] in errors[rel], (kind, errors[rel])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_training_refuses_before_the_first_epoch(
    damaged_dataset, bomb_limit, tmp_path: Path
) -> None:
    root, victims = damaged_dataset
    epochs: list[dict] = []
    with pytest.raises(DataError) as info:
        train(load_config(tiny_trial(root=str(root))), epochs.append, out_dir=tmp_path)
    message = str(info.value)
    assert f"wen data check {root}" in message and "data.skip_bad_files=true" in message
    for path in victims.values():
        assert path.name in message
    assert epochs == [] and not (tmp_path / "checkpoints").exists()  # nothing ran mid-way


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_training_skips_bad_files_with_one_log_line_each(
    damaged_dataset, bomb_limit, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, victims = damaged_dataset
    raw = tiny_trial(root=str(root), skip_bad_files=True)
    raw["train"].update(epochs=1, max_steps_per_epoch=2)
    with caplog.at_level(logging.WARNING, logger="wen.data"):
        result = train(load_config(raw), out_dir=tmp_path)
    # a mislabelled file never enters the manifest, so it is logged as "not skippable"
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(("skipping bad file", "not skippable"))
    ]
    assert len(lines) == len(victims), lines
    for path in victims.values():
        assert sum(path.name in line for line in lines) == 1, (path.name, lines)
    # the trial finished and predicted; no skipped file appears in its predictions
    frame = pd.read_parquet(result.predictions_path)
    assert result.best_epoch == 1 and len(frame) > 0
    names = {Path(s).name for s in frame["sample_id"]}
    assert not names & {p.name for p in victims.values()}


def test_labels_csv_path_escaping_the_root_is_refused(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "folder", "imagefolder", 2, 3, 32, seed=0)
    secret = tmp_path / "secret.bmp"
    Image.new("RGB", (32, 32)).save(secret, format="BMP")
    first = sorted(root.rglob("*.png"))[0].relative_to(root).as_posix()
    (root / "subjects.csv").write_text(f"path,subject_id\n{first},s1\n../secret.bmp,s2\n")
    result = CliRunner().invoke(app, ["data", "check", str(root)])
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert "escapes the dataset root" in out and "'../secret.bmp'" in out and "subjects.csv" in out
    with pytest.raises(Exception, match="escapes the dataset root"):  # training refuses too
        train(load_config(tiny_trial(root=str(root), layout="imagefolder")), out_dir=tmp_path / "t")
