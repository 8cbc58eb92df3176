"""The run folder's layout has one owner (ARCHITECTURE rule 14): names, the models folder, and
a scan that fails when a package spells a run path by hand."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from trainers.run_layout import (
    RUN_LAYOUT,
    MemberFileError,
    publish_member,
    read_member,
)

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("trainers", "search", "ensemble", "reports", "benchmarks")
OWNER = REPO / "trainers" / "run_layout.py"

# file names of the run folder, its sub-folders, and the prefixes of names below them
RUN_FILES = {
    "config.yaml",
    "command.txt",
    "results.csv",
    "results.parquet",
    "chosen.json",
    "comparison.csv",
    "comparisons.csv",
    "confusion.csv",
    "study.db",
    "run.lock",
}
RUN_FOLDERS = {"predictions", "models", "tensorboard", "ensemble", "model", "report"}
PREFIXES = ("predictions/", "models/", "tensorboard/", "ensemble/")


def test_names_are_relative_posix_paths() -> None:
    assert RUN_LAYOUT.config == "config.yaml" and RUN_LAYOUT.command == "command.txt"
    assert (RUN_LAYOUT.results_csv, RUN_LAYOUT.results_parquet) == (
        "results.csv",
        "results.parquet",
    )
    assert RUN_LAYOUT.prediction("t1") == "predictions/t1.parquet"
    assert RUN_LAYOUT.orphan("t1") == "predictions/_orphaned/t1.parquet"
    assert RUN_LAYOUT.model_weights("t1") == "models/t1/model.safetensors"
    assert RUN_LAYOUT.model_config("t1") == "models/t1/config.json"
    assert RUN_LAYOUT.tensorboard_dir("t1") == "tensorboard/t1"
    assert RUN_LAYOUT.chosen == "ensemble/chosen.json"
    assert RUN_LAYOUT.comparison == "ensemble/comparison.csv"
    assert RUN_LAYOUT.study_db == "ensemble/study.db"
    assert RUN_LAYOUT.ensemble_lock == "ensemble/run.lock"
    assert (RUN_LAYOUT.export, RUN_LAYOUT.report) == ("model", "report")
    # the same name serves a local folder
    assert (Path("/runs/r") / RUN_LAYOUT.chosen) == Path("/runs/r/ensemble/chosen.json")


def test_publish_then_read_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "best.safetensors"
    src.write_bytes(b"weights")
    meta = {"trial_id": "t1", "class_names": ["a", "b"], "config": {"seed": 0}}
    assert publish_member(tmp_path / "run", "t1", src, meta) == "models/t1"
    member = read_member(tmp_path / "run", "t1")
    assert member.weights == tmp_path / "run" / RUN_LAYOUT.model_weights("t1")
    assert member.weights.read_bytes() == b"weights" and member.meta == meta
    # bytes in, and an existing config.json copied verbatim into another models folder
    publish_member(tmp_path / "out", "t1", b"w2", member.config.read_bytes(), models="members")
    copied = read_member(tmp_path / "out", "t1", models="members")
    assert copied.weights.read_bytes() == b"w2" and json.loads(copied.config.read_text()) == meta
    # nothing but the two files: no temporary file is left
    assert sorted(p.name for p in copied.weights.parent.iterdir()) == [
        "config.json",
        "model.safetensors",
    ]


def test_publish_through_a_run_writer() -> None:
    written: dict[str, bytes] = {}

    class Writer:
        def write_bytes(self, rel: str, data: bytes) -> None:
            written[rel] = data

        def upload_file(self, src: Path, rel: str) -> None:
            written[rel] = Path(src).read_bytes()

    publish_member(Writer(), "t2", b"w", {"trial_id": "t2"})
    assert list(written) == ["models/t2/model.safetensors", "models/t2/config.json"]
    assert json.loads(written["models/t2/config.json"]) == {"trial_id": "t2"}


def test_reading_a_missing_member_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(MemberFileError, match=r"models/t9/config.json does not exist"):
        read_member(tmp_path, "t9")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings or bare string statements."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def _hand_spelled(tree: ast.AST) -> list[ast.Constant]:
    """String constants that name a run file, or a run folder joined onto a path by hand."""
    skip = _docstrings(tree)
    joined: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            joined.add(id(node.right))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and getattr(node.func, "attr", "") in ("join", "local_path", "joinpath")
        ):
            joined.add(id(node.args[0]))
    found = []
    for node in ast.walk(tree):
        if (
            not isinstance(node, ast.Constant)
            or not isinstance(node.value, str)
            or id(node) in skip
        ):
            continue
        value = node.value
        if (
            value in RUN_FILES
            or value.startswith(PREFIXES)
            or (id(node) in joined and value in RUN_FOLDERS)
        ):
            found.append(node)
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def _offenders() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path == OWNER:
                continue
            source = path.read_text()
            lines = source.splitlines()
            for node in _hand_spelled(ast.parse(source)):
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                found.append(f"{where}: {lines[node.lineno - 1].strip()}")
    return sorted(set(found))


def test_the_scan_finds_hand_spelled_paths() -> None:
    source = (
        'p = run / "ensemble" / "chosen.json"\nq = f"models/{t}"\nr = run.join("predictions")\n'
    )
    assert [n.value for n in _hand_spelled(ast.parse(source))] == [
        "ensemble",
        "chosen.json",
        "models/",
        "predictions",
    ]
    assert _hand_spelled(ast.parse('"""see RUN/ensemble/chosen.json"""\nx = {"model": 1}\n')) == []


def test_no_package_spells_a_run_path_by_hand() -> None:
    offenders = _offenders()
    assert not offenders, (
        "run-folder paths spelled by hand (ARCHITECTURE rule 14); take them from "
        "trainers.run_layout.RUN_LAYOUT instead:\n" + "\n".join(offenders)
    )
