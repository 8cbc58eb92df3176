"""The one owner of the run folder's layout and of the models-folder format (ARCHITECTURE rule 14).

Every path under ``RUN`` comes from :data:`RUN_LAYOUT` (nnU-Net's
``utilities/file_path_utilities.py`` is the model). The names are relative POSIX strings, so
the same object serves a local folder (``run_dir / RUN_LAYOUT.chosen``) and
``search.storage.RunStorage`` (``run.exists(RUN_LAYOUT.prediction(tid))``), which also works on
``s3://`` runs. ``trainers`` is imported by every package, so search, ensemble, reports and
the benchmarks all read the names from here.

A models folder holds one sub-folder per trial: ``<trial_id>/model.safetensors`` (the best
weights) and ``<trial_id>/config.json`` (``trial_id``, ``class_names``, ``config`` and the
best epoch's metrics); :func:`publish_member` writes one, :func:`read_member` reads one.

>>> RUN_LAYOUT.chosen, RUN_LAYOUT.prediction("t1")
('ensemble/chosen.json', 'predictions/t1.parquet')
>>> import tempfile, pathlib
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> _ = publish_member(run, "t1", b"weights", {"trial_id": "t1", "config": {}})
>>> read_member(run, "t1").meta["trial_id"]
't1'
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trainers._atomic import atomic_path, atomic_write_bytes
from trainers.errors import WenError

__all__ = [
    "MODEL_CONFIG",
    "MODEL_WEIGHTS",
    "RUN_LAYOUT",
    "MemberFileError",
    "PublishedMember",
    "RunLayout",
    "RunWriter",
    "publish_member",
    "snapshot_id",
    "read_member",
]

MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"


@dataclass(frozen=True)
class RunLayout:
    """The relative POSIX name of every file and folder a run holds.

    The fields are the top-level names; the properties and methods build the names below
    them, so a rename happens here and nowhere else.

    >>> RunLayout().model_weights("t1")
    'models/t1/model.safetensors'
    """

    config: str = "config.yaml"
    command: str = "command.txt"
    results_csv: str = "results.csv"
    results_parquet: str = "results.parquet"
    predictions: str = "predictions"
    models: str = "models"
    tensorboard: str = "tensorboard"
    ensemble: str = "ensemble"
    export: str = "model"
    report: str = "report"
    live: str = "live"

    @property
    def orphans(self) -> str:
        """Where prediction files of trials Tune no longer knows are moved on resume."""
        return posixpath.join(self.predictions, "_orphaned")

    @property
    def orphan_snapshots(self) -> str:
        """Where snapshots of trials Tune no longer knows are moved on resume."""
        return posixpath.join(self.orphans, "snapshots")

    def prediction(self, trial_id: str) -> str:
        """A trial's prediction file."""
        return posixpath.join(self.predictions, f"{trial_id}.parquet")

    @property
    def snapshots(self) -> str:
        """The folder of every trial's snapshot predictions (one file per LR-cycle trough)."""
        return posixpath.join(self.predictions, "snapshots")

    def snapshot(self, snapshot_id: str) -> str:
        """One snapshot's prediction file (``snapshot_id`` is ``<trial_id>@e<epoch>``)."""
        return posixpath.join(self.snapshots, f"{snapshot_id}.parquet")

    def snapshot_under(self, predictions_dir: Path, snapshot_id: str) -> Path:
        """That file under a trainer's predictions folder (``RUN/predictions`` or a scratch
        copy of it).

        >>> RUN_LAYOUT.snapshot_under(Path("/scratch/predictions"), "t1@e4").as_posix()
        '/scratch/predictions/snapshots/t1@e4.parquet'
        """
        rel = posixpath.relpath(self.snapshot(snapshot_id), self.predictions)
        return predictions_dir / rel

    def orphan(self, trial_id: str) -> str:
        """Where an orphaned trial's prediction file is moved."""
        return posixpath.join(self.orphans, f"{trial_id}.parquet")

    def model_dir(self, trial_id: str) -> str:
        """A finished trial's folder in ``models/``."""
        return posixpath.join(self.models, trial_id)

    def model_weights(self, trial_id: str) -> str:
        """A finished trial's best weights."""
        return posixpath.join(self.models, trial_id, MODEL_WEIGHTS)

    def model_config(self, trial_id: str) -> str:
        """A finished trial's ``config.json``."""
        return posixpath.join(self.models, trial_id, MODEL_CONFIG)

    def tensorboard_dir(self, trial_id: str) -> str:
        """A trial's TensorBoard event files."""
        return posixpath.join(self.tensorboard, trial_id)

    @property
    def live_search(self) -> str:
        """The search's live state (``search.live``): status, scheduler rungs, searched keys."""
        return posixpath.join(self.live, "search.json")

    @property
    def live_trials(self) -> str:
        """The folder of every trial's live record (``search.live``)."""
        return posixpath.join(self.live, "trials")

    def live_trial(self, trial_id: str) -> str:
        """One trial's live record: status, parameters and every epoch's metrics."""
        return posixpath.join(self.live_trials, f"{trial_id}.json")

    def ensemble_file(self, name: str) -> str:
        """A file of ``wen ensemble`` by its name (``weights.json``, ``members.csv``...)."""
        return posixpath.join(self.ensemble, name)

    @property
    def chosen(self) -> str:
        """The selected ensemble method and the reason it was selected."""
        return self.ensemble_file("chosen.json")

    @property
    def comparison(self) -> str:
        """Every method's metrics with intervals, one row per (method, split)."""
        return self.ensemble_file("comparison.csv")

    @property
    def comparison_md(self) -> str:
        """The comparison as a Markdown table with the selection's reason."""
        return self.ensemble_file("comparison.md")

    @property
    def members_table(self) -> str:
        """Every member considered, whether it was a candidate, and its trials."""
        return self.ensemble_file("members.csv")

    @property
    def comparisons(self) -> str:
        """The paired tests between methods."""
        return self.ensemble_file("comparisons.csv")

    @property
    def tests(self) -> str:
        """Every paired test on test, one row per (method, baseline, metric, test)."""
        return self.ensemble_file("tests.csv")

    @property
    def calibration(self) -> str:
        """The chosen method's test calibration before and after temperature scaling."""
        return self.ensemble_file("calibration.csv")

    @property
    def operating_points(self) -> str:
        """The chosen method's decision thresholds (binary) and their test rates."""
        return self.ensemble_file("operating_points.csv")

    @property
    def confusion(self) -> str:
        """Every method's confusion matrices."""
        return self.ensemble_file("confusion.csv")

    @property
    def diversity(self) -> str:
        """Pairwise disagreement and error correlation of the candidates on held-out data."""
        return self.ensemble_file("diversity.csv")

    @property
    def ambiguity(self) -> str:
        """Every weighted-average method's Brier score split into member loss and ambiguity."""
        return self.ensemble_file("ambiguity.csv")

    @property
    def ensemble_weights(self) -> str:
        """Every method's fitted weights and the members they weight."""
        return self.ensemble_file("weights.json")

    @property
    def study_db(self) -> str:
        """The Optuna study of the searched weighting (SQLite; re-running resumes it)."""
        return self.ensemble_file("study.db")

    @property
    def ensemble_lock(self) -> str:
        """The lock that keeps two ``wen ensemble`` runs on one folder apart."""
        return self.ensemble_file("run.lock")

    @property
    def ensemble_probabilities(self) -> str:
        """Every method's probabilities on val, held-out val and test
        (``ensemble.probabilities``)."""
        return self.ensemble_file("probabilities.parquet")

    @property
    def ensemble_settings(self) -> str:
        """The ensemble settings ``wen ensemble`` ran with (config, flags and ``--set``)."""
        return self.ensemble_file("settings.json")


RUN_LAYOUT = RunLayout()


def snapshot_id(trial_id: str, epoch: int) -> str:
    """The id of a trial's snapshot at ``epoch``: its prediction file's and models folder's name.

    >>> snapshot_id("t1", 4)
    't1@e4'
    """
    return f"{trial_id}@e{int(epoch)}"


class MemberFileError(WenError, FileNotFoundError):
    """A trial's folder in a models folder is missing a file or holds an unreadable one."""


class RunWriter(Protocol):
    """What :func:`publish_member` needs of a run folder that may be remote
    (``search.storage.RunStorage`` has these methods)."""

    def write_bytes(self, rel: str, data: bytes) -> None: ...

    def upload_file(self, src: Path, rel: str) -> None: ...


@dataclass(frozen=True)
class PublishedMember:
    """One trial's files in a models folder, with its parsed ``config.json``."""

    trial_id: str
    weights: Path
    config: Path
    meta: dict[str, Any]


def _meta_bytes(meta: Mapping[str, Any] | bytes) -> bytes:
    if isinstance(meta, bytes):  # an existing config.json, copied verbatim
        return meta
    return json.dumps(dict(meta), indent=2, default=str).encode()


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` at ``target`` (replacing it), or copy it across filesystems."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def publish_member(
    run: Path | RunWriter,
    trial_id: str,
    weights: Path | bytes,
    meta: Mapping[str, Any] | bytes,
    models: str = RUN_LAYOUT.models,
) -> str:
    """Write ``<models>/<trial_id>/`` under ``run``: the weights, then ``config.json``.

    ``weights`` is a safetensors file to copy or its bytes (``safetensors.torch.save``); a
    file on the same filesystem as a local ``run`` is hard-linked, not copied (the trainer
    replaces its checkpoint files rather than rewriting them, so the link keeps its bytes);
    ``meta`` the JSON-able config record or an existing ``config.json``'s bytes. Each file is
    written atomically and ``config.json`` last, so its presence marks a complete member.
    ``models`` names the folder (an export's ``members``). Returns the relative folder name.
    """
    folder = posixpath.join(models, trial_id)
    weights_rel = posixpath.join(folder, MODEL_WEIGHTS)
    config_rel = posixpath.join(folder, MODEL_CONFIG)
    if isinstance(run, Path):
        if isinstance(weights, bytes):
            atomic_write_bytes(run / weights_rel, weights, what="model weights")
        else:
            with atomic_path(run / weights_rel, what="model weights") as tmp:
                _link_or_copy(Path(weights), tmp)
        atomic_write_bytes(run / config_rel, _meta_bytes(meta), what="model config")
    else:
        if isinstance(weights, bytes):
            run.write_bytes(weights_rel, weights)
        else:
            run.upload_file(weights, weights_rel)
        run.write_bytes(config_rel, _meta_bytes(meta))
    return folder


def read_member(run: Path, trial_id: str, models: str = RUN_LAYOUT.models) -> PublishedMember:
    """The files of ``<models>/<trial_id>/`` under the local folder ``run``.

    Raises :class:`MemberFileError` naming the missing or unreadable file.
    """
    folder = Path(run) / models / trial_id
    weights, config = folder / MODEL_WEIGHTS, folder / MODEL_CONFIG
    for path in (config, weights):
        if not path.is_file():
            raise MemberFileError(
                f"{path} does not exist; the search stage publishes each finished trial's best "
                "weights there (was the trial killed before it finished?): re-run the trial or "
                "leave it out"
            )
    try:
        meta = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise MemberFileError(f"{config}: not readable JSON ({exc}); re-run the trial") from None
    if not isinstance(meta, dict):
        raise MemberFileError(f"{config}: expected a JSON object; re-run the trial")
    return PublishedMember(trial_id, weights, config, meta)
