"""Read what the other stages wrote into a run folder; never write there, never import ``search``.

Every reader returns the data or raises :class:`MissingInput` with the reason and the command
that would produce the input, so the report can say so in the section that needs it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from trainers.run_layout import RUN_LAYOUT

__all__ = ["MethodPredictions", "MissingInput", "RunInputs", "load_run"]

log = logging.getLogger("wen.reports")

#: TensorBoard tags the search stage writes (search/trainable.py: TuneReporter._tensorboard).
TB_LR_STEP = "lr/step"
#: The study's seven metrics, in the study's column order.
STUDY_METRICS = ("wp", "wr", "wfs", "acc", "ba", "auc", "kappa")
#: The report's metric tables: the study's seven, and Matthews' correlation beside them.
REPORT_METRICS = (*STUDY_METRICS, "mcc")


class MissingInput(Exception):
    """A report section's input is absent or unreadable; the message says what and how to fix."""


@dataclass
class MethodPredictions:
    """Aligned probabilities of the ensemble members and methods on one split."""

    split: str
    y: np.ndarray
    sample_ids: np.ndarray
    subject_ids: np.ndarray
    members: dict[str, np.ndarray]  # display name -> [n, k]
    methods: dict[str, np.ndarray]  # method name -> [n, k]
    thresholds: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MissingInput(f"{path} is not readable JSON ({exc})") from None


def _read_csv(path: Path, hint: str) -> pd.DataFrame:
    if not path.is_file():
        raise MissingInput(f"{path} does not exist; {hint}")
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise MissingInput(f"{path} is not a readable CSV table ({exc}); {hint}") from None


ENSEMBLE_HINT = "run `wen ensemble RUN` to compare the ensemble methods"
SEARCH_HINT = "run `wen search CONFIG` (it writes the run folder)"


class RunInputs:
    """Lazy, cached access to one run folder's files (each property raises MissingInput)."""

    def __init__(self, run_dir: str | Path, say: Callable[[str], None] = log.info) -> None:
        self.run_dir = Path(run_dir)
        self.say = say
        if not self.run_dir.is_dir():
            raise FileNotFoundError(
                f"run folder {self.run_dir} does not exist; pass the RUN folder `wen search` printed"
            )

    # ------------------------------------------------------------------------ run files

    @cached_property
    def config(self) -> dict[str, Any]:
        """The run's resolved config (``RUN/config.yaml``) as a plain dict."""
        path = self.run_dir / RUN_LAYOUT.config
        if not path.is_file():
            raise MissingInput(f"{path} does not exist; {SEARCH_HINT}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise MissingInput(f"{path} is not valid YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise MissingInput(f"{path}: the top level must be a mapping")
        return raw

    def config_or_empty(self) -> dict[str, Any]:
        """``config`` or ``{}`` when the run has none."""
        try:
            return self.config
        except MissingInput:
            return {}

    @cached_property
    def results(self) -> pd.DataFrame:
        """The search's results table, one row per trial (Parquet preferred, else CSV)."""
        parquet = self.run_dir / RUN_LAYOUT.results_parquet
        if parquet.is_file():
            try:
                return pd.read_parquet(parquet)
            except (OSError, ValueError) as exc:
                self.say(f"results.parquet unreadable ({exc}); trying results.csv")
        return _read_csv(self.run_dir / RUN_LAYOUT.results_csv, SEARCH_HINT)

    @cached_property
    def commands(self) -> list[str]:
        """The command lines that produced the run (``RUN/command.txt``, one per invocation)."""
        path = self.run_dir / RUN_LAYOUT.command
        if not path.is_file():
            raise MissingInput(f"{path} does not exist; the run was not made by `wen search`")
        return [line for line in path.read_text().splitlines() if line.strip()]

    def model_meta(self, trial_id: str) -> dict[str, Any]:
        """``RUN/models/<trial_id>/config.json``: the trial's config, class names, best epoch."""
        path = self.run_dir / RUN_LAYOUT.model_config(trial_id)
        if not path.is_file():
            raise MissingInput(
                f"{path} does not exist; the search stage copies each finished trial's best "
                "weights there (was the trial killed before it finished?)"
            )
        meta = _read_json(path)
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise MissingInput(f"{path}: expected a JSON object with a 'config' object")
        return meta

    def model_weights(self, trial_id: str) -> Path:
        """``RUN/models/<trial_id>/model.safetensors``."""
        path = self.run_dir / RUN_LAYOUT.model_weights(trial_id)
        if not path.is_file():
            raise MissingInput(f"{path} does not exist; the trial's best weights were not saved")
        return path

    @cached_property
    def trial_ids(self) -> list[str]:
        """Trials known from the results table, else from prediction files."""
        try:
            return [str(t) for t in self.results["trial_id"].dropna()]
        except MissingInput:
            pred = self.run_dir / RUN_LAYOUT.predictions
            return sorted(
                p.stem for p in pred.glob("*.parquet") if not p.name.startswith((".", "_"))
            )

    def backbone_of(self, trial_id: str) -> str:
        """A trial's backbone: searched value, else its model config, else the run config."""
        try:
            row = self.results.set_index("trial_id").loc[trial_id]
            if "model.backbone" in row and pd.notna(row["model.backbone"]):
                return str(row["model.backbone"])
        except (MissingInput, KeyError):
            pass
        try:
            return str(self.model_meta(trial_id)["config"]["model"]["backbone"])
        except (MissingInput, KeyError, TypeError):
            pass
        return str(self.config_or_empty().get("model", {}).get("backbone", "?"))

    # ------------------------------------------------------------------------ histories

    @cached_property
    def histories(self) -> dict[str, pd.DataFrame]:
        """Per-epoch history of each trial: TensorBoard scalars, else Tune's progress.csv."""
        out: dict[str, pd.DataFrame] = {}
        for trial_id in self.trial_ids:
            frame = self._tensorboard_epochs(trial_id)
            if frame is None or frame.empty:
                frame = self._progress_csv(trial_id)
            if frame is not None and not frame.empty:
                out[trial_id] = frame
        if not out:
            raise MissingInput(
                f"no per-epoch history in {self.run_dir / RUN_LAYOUT.tensorboard} (TensorBoard logs, "
                f"search.tensorboard) nor in {self.run_dir}/trial_*/progress.csv"
            )
        return out

    @cached_property
    def lr_steps(self) -> dict[str, pd.DataFrame]:
        """Per-optimizer-step learning rate of each trial (TensorBoard ``lr/step``); may be empty."""
        out = {}
        for trial_id in self.trial_ids:
            scalars = self._tensorboard_scalars(trial_id)
            if scalars and TB_LR_STEP in scalars:
                out[trial_id] = scalars[TB_LR_STEP].rename(columns={"value": "lr"})
        return out

    @cached_property
    def _tb_cache(self) -> dict[str, dict[str, pd.DataFrame] | None]:
        return {}

    def _tensorboard_scalars(self, trial_id: str) -> dict[str, pd.DataFrame] | None:
        if trial_id in self._tb_cache:
            return self._tb_cache[trial_id]
        folder = self.run_dir / RUN_LAYOUT.tensorboard_dir(trial_id)
        result: dict[str, pd.DataFrame] | None = None
        if folder.is_dir() and any(folder.glob("events.out.tfevents.*")):
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

            # size_guidance 0 = keep every point (the default reservoir keeps a sample)
            acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
            acc.Reload()
            result = {}
            for tag in acc.Tags().get("scalars", []):
                events = acc.Scalars(tag)
                frame = pd.DataFrame(
                    {"step": [e.step for e in events], "value": [e.value for e in events]}
                )
                # a resumed trial re-reports epochs: the last write of a step wins
                result[tag] = frame.drop_duplicates("step", keep="last").sort_values("step")
        self._tb_cache[trial_id] = result
        return result

    def _tensorboard_epochs(self, trial_id: str) -> pd.DataFrame | None:
        scalars = self._tensorboard_scalars(trial_id)
        if not scalars:
            return None
        columns = {}
        for tag, frame in scalars.items():
            if tag == TB_LR_STEP:
                continue
            name = tag.split("/", 1)[-1]
            columns[name] = frame.set_index("step")["value"]
        if not columns:
            return None
        history = pd.DataFrame(columns)
        history.index.name = "epoch"
        return history.reset_index()

    def _progress_csv(self, trial_id: str) -> pd.DataFrame | None:
        path = self.run_dir / f"trial_{trial_id}" / "progress.csv"
        if not path.is_file():
            return None
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError):
            return None
        if "epoch" not in frame:
            return None
        return (
            frame.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)
        )

    # ------------------------------------------------------------------------- ensemble

    def ensemble_file(self, rel: str) -> Path:
        """A file of ``RUN/ensemble/`` by its ``RUN_LAYOUT`` name (MissingInput when the
        ensemble stage has not run)."""
        path = self.run_dir / rel
        if not path.is_file():
            raise MissingInput(f"{path} does not exist; {ENSEMBLE_HINT}")
        return path

    @cached_property
    def comparison(self) -> pd.DataFrame:
        """``comparison.csv``: one row per method and split, metrics with intervals."""
        return _read_csv(self.run_dir / RUN_LAYOUT.comparison, ENSEMBLE_HINT)

    @cached_property
    def comparisons(self) -> pd.DataFrame:
        """``comparisons.csv``: paired tests of every method against the baselines (test)."""
        return _read_csv(
            self.run_dir / RUN_LAYOUT.comparisons,
            f"{ENSEMBLE_HINT} (it is written only when the members have test predictions)",
        )

    @cached_property
    def recalibration(self) -> pd.DataFrame:
        """``calibration.csv``: the chosen method's test ECE/Brier before and after its
        temperature scaling."""
        return _read_csv(
            self.run_dir / RUN_LAYOUT.calibration,
            f"{ENSEMBLE_HINT} with ensemble.temperature_scaling on and test predictions",
        )

    @cached_property
    def operating_points(self) -> pd.DataFrame:
        """``operating_points.csv``: the chosen method's thresholds and test rates (binary)."""
        return _read_csv(
            self.run_dir / RUN_LAYOUT.operating_points,
            f"{ENSEMBLE_HINT} (it is written for a binary task with test predictions)",
        )

    @cached_property
    def confusion(self) -> pd.DataFrame:
        """``confusion.csv``: test confusion counts of every method (long format)."""
        return _read_csv(
            self.run_dir / RUN_LAYOUT.confusion,
            f"{ENSEMBLE_HINT} (it is written only when the members have test predictions)",
        )

    @cached_property
    def diversity(self) -> pd.DataFrame:
        """``diversity.csv``: the candidates' pairwise disagreement and error correlation on
        test (one row per pair, or one row saying why there are none)."""
        return _read_csv(
            self.run_dir / RUN_LAYOUT.diversity,
            f"{ENSEMBLE_HINT} (runs ensembled before it measured diversity lack it)",
        )

    @cached_property
    def ambiguity(self) -> pd.DataFrame:
        """``ambiguity.csv``: each method's test Brier split into member Brier and ambiguity."""
        return _read_csv(
            self.run_dir / RUN_LAYOUT.ambiguity,
            f"{ENSEMBLE_HINT} (runs ensembled before it measured diversity lack it)",
        )

    @cached_property
    def weights(self) -> dict[str, Any]:
        """``weights.json``: members and each method's weights and threshold."""
        return _read_json(self.ensemble_file(RUN_LAYOUT.ensemble_weights))

    @cached_property
    def chosen(self) -> dict[str, Any]:
        """``chosen.json``: the method to export, why, and its members with weights."""
        return _read_json(self.ensemble_file(RUN_LAYOUT.chosen))

    @cached_property
    def ensemble_settings(self) -> Any:
        """The settings ``wen ensemble`` ran with (``RUN/ensemble/settings.json``); before it
        has run, the config's ``ensemble:`` section (defaults when the config has none)."""
        from ensemble import EnsembleSettings

        used = self.run_dir / RUN_LAYOUT.ensemble_settings
        raw = _read_json(used) if used.is_file() else self.config_or_empty().get("ensemble") or {}
        try:
            return EnsembleSettings.model_validate(raw)
        except ValueError:
            return EnsembleSettings()

    # ------------------------------------------------------------------------ members

    @cached_property
    def all_members(self) -> list[Any]:
        """Every configuration's member (``ensemble.members``), bad files skipped and noted."""
        from ensemble.members import build_members, load_prediction_sets

        try:
            sets = load_prediction_sets(
                self.run_dir / RUN_LAYOUT.predictions, skip_bad=True, say=self.say
            )
            return build_members(sets, skip_bad=True, say=self.say)
        except (ValueError, OSError) as exc:  # EnsembleInputError / PredictionFileError
            raise MissingInput(f"no usable predictions: {exc}") from None

    @cached_property
    def class_names(self) -> list[str]:
        """Class names of the run's predictions."""
        from trainers.predictions import read_predictions

        for member in self.all_members:
            for path in member.paths:
                return list(read_predictions(path).class_names)
        raise MissingInput("no prediction file names its class names")

    @cached_property
    def ensemble_members(self) -> list[Any]:
        """The members the ensemble stage combined (weights.json order), else best per backbone."""
        members = self.all_members
        try:
            names = [m["name"] for m in self.weights["members"]]
        except MissingInput:
            from ensemble.members import select_candidates

            return select_candidates(members, "best-per-backbone", by="wfs")
        by_name = {m.name: m for m in members}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise MissingInput(
                f"weights.json names member(s) {missing} that the prediction files no longer "
                f"hold; re-run `wen ensemble RUN`"
            )
        return [by_name[n] for n in names]

    def member_label(self, member: Any) -> str:
        """Short display name: backbone and trial id(s)."""
        return f"{member.backbone} [{member.name}]"

    @cached_property
    def _method_cache(self) -> dict[str, MethodPredictions]:
        return {}

    def predictions(self, split: str) -> MethodPredictions:
        """Members' and methods' probabilities on ``split`` (``val`` or ``test``)."""
        if split in self._method_cache:
            return self._method_cache[split]
        from ensemble.members import stack_members

        members = self.ensemble_members
        try:
            arrays = stack_members(members, split)
        except ValueError as exc:
            raise MissingInput(f"the members have no {split!r} predictions ({exc})") from None
        out = MethodPredictions(
            split=split,
            y=arrays.y,
            sample_ids=arrays.sample_ids,
            subject_ids=arrays.subject_ids,
            members={self.member_label(m): arrays.P[i] for i, m in enumerate(members)},
            methods={},
        )
        try:
            weights = self.weights
        except MissingInput as exc:
            out.notes.append(f"ensemble methods are not shown: {exc}")
        else:
            self._add_methods(out, weights)
        self._method_cache[split] = out
        return out

    def _add_methods(self, out: MethodPredictions, weights: dict[str, Any]) -> None:
        """Each method's probabilities as ``wen ensemble`` computed and scored them
        (``RUN/ensemble/probabilities.parquet``); the report never refits a method."""
        from ensemble.probabilities import MethodProbabilitiesError, read_method_probabilities

        try:
            table = read_method_probabilities(self.run_dir / RUN_LAYOUT.ensemble_probabilities)
            for name, entry in weights.get("methods", {}).items():
                out.thresholds[name] = entry.get("threshold")
                out.methods[name] = table.probs(name, out.split, list(out.sample_ids))
        except MethodProbabilitiesError as exc:
            out.methods.clear()
            out.notes.append(f"ensemble methods are not shown: {exc}")


def load_run(run_dir: str | Path, say: Callable[[str], None] = log.info) -> RunInputs:
    """Open a run folder for reading (files are read on first use)."""
    return RunInputs(run_dir, say)
