"""The Tune trainable: a thin adapter around the pure trial function ``trainers.train``.

Only this module knows Ray's reporting API (``tune.report``, ``tune.get_checkpoint``,
``tune.Checkpoint``); the trainer only ever sees a ``report(metrics)`` callback.

Per trial it:
- builds the trial config from the base config plus the trial's searched values (the fold
  made explicit), and gives the trainer one CPU thread per CPU the trial holds;
- resumes from Tune's latest checkpoint when there is one (a retried, paused or restored
  trial), passing it to the trainer as ``resume_from``;
- reports every epoch's metrics to Tune with the epoch's checkpoint, plus ``best_<metric>``
  (the searcher's objective), ``lr_cycles`` (the scheduler's clock), the node IP and node id;
- writes TensorBoard curves and the per-step learning-rate trace;
- writes predictions straight into ``RUN/predictions/<trial_id>.parquet`` and copies the best
  weights to ``RUN/models/<trial_id>/`` with a ``config.json``;
- publishes every learning-rate trough's snapshot (its predictions under
  ``RUN/predictions/snapshots/``, its weights to ``RUN/models/<trial_id>@e<epoch>/``) before
  that epoch reaches Tune, so a trial ASHA stops at a rung keeps the snapshots it reached.

Test hook: ``WEN_FAULT_INJECT=<epoch>`` in the driver's environment makes every trial raise
once, right after reporting that epoch on a fresh start (never after resuming), so tests can
prove a failed trial is retried from its checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.space import FOLD_KEY, trial_overrides
from search.storage import RunStorage
from trainers._atomic import atomic_write_json
from trainers.config import TrialConfig, apply_overrides, load_config
from trainers.run_layout import RUN_LAYOUT, publish_member

__all__ = [
    "FAULT_ENV",
    "InjectedFault",
    "SnapshotPublisher",
    "TrialSpec",
    "TuneReporter",
    "make_trainable",
    "resolve_train_fn",
]

FAULT_ENV = "WEN_FAULT_INJECT"
#: Written next to each checkpoint Tune persists, so a resumed trial keeps its running best.
_BEST_FILE = "wen_tune.json"

TrainFn = Callable[..., Any]


#: The validation metrics the TensorBoard HParams view compares trials by.
HPARAM_METRICS = ("val_wfs", "val_auc", "val_acc", "val_kappa", "val_loss")
#: Points per epoch of the learning-rate trace sent with each report (``search.live``).
LR_POINTS = 8


def lr_points(trace: Any, n: int = LR_POINTS) -> list[float]:
    """``n`` evenly spaced values of an epoch's per-step learning rates, the last included.

    >>> lr_points([1.0, 2.0, 3.0, 4.0, 5.0], n=3)
    [1.0, 3.0, 5.0]
    """
    values = [float(v) for v in trace]
    if len(values) <= n:
        return values
    step = (len(values) - 1) / (n - 1)
    return [values[round(i * step)] for i in range(n)]


class InjectedFault(RuntimeError):
    """Raised by the ``WEN_FAULT_INJECT`` test hook."""


@dataclass(frozen=True)
class TrialSpec:
    """What every trial needs from the driver; small and picklable (it is in Tune's state).

    ``base`` is the resolved trial config (JSON-able dict); ``train_fn`` an import path
    ``module:function`` resolved on the worker.
    """

    base: dict[str, Any]
    storage: str
    name: str
    metric: str
    mode: str
    cycle_epochs: float = 1.0
    folds: list[int] | None = None
    cpus: float = 1.0
    tensorboard: bool = True
    fault_epoch: int | None = None
    train_fn: str = "trainers:train"
    searched: list[str] = field(default_factory=list)
    #: Tune's checkpoint names the trainer's checkpoint in RUN instead of copying it (see
    #: :class:`TuneReporter`); the driver sets it for local storage without PBT
    checkpoint_by_reference: bool = False


def resolve_train_fn(path: str) -> TrainFn:
    """``"pkg.module:function"`` -> the function."""
    import importlib

    module, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"train function {path!r} must look like 'module:function'")
    return getattr(importlib.import_module(module), attr)


def trial_config(spec: TrialSpec, tune_config: dict[str, Any]) -> TrialConfig:
    """The trial's config: the base plus its searched values; threads = the CPUs it holds."""
    raw = apply_overrides(spec.base, trial_overrides(tune_config, spec.folds))
    if raw.get("train", {}).get("threads") is None:
        raw = apply_overrides(raw, {"train.threads": max(1, int(math.floor(spec.cpus)))})
    return load_config(raw, model=TrialConfig)


class TuneReporter:
    """The ``report`` callback handed to the trainer: forwards each epoch to Tune.

    Keeps the running best of the search metric (restored from the checkpoint on resume),
    adds the scheduler clock and the node, writes TensorBoard, attaches the checkpoint.

    The checkpoint Tune gets: Tune copies every reported checkpoint into its trial folder
    (``ray.train._internal.storage.StorageContext.persist_current_checkpoint``). With local
    storage the trainer's own checkpoint already lies in RUN, on storage every node sees, so
    with ``spec.checkpoint_by_reference`` (``run_root`` given) Tune gets a folder holding only
    the best-epoch record, which names the trainer's checkpoint by its path in RUN: Tune
    copies a few hundred bytes instead of the weights and optimizer state every epoch. A
    resumed trial continues from the trainer's newest checkpoint (:func:`_own_checkpoint`),
    which the trainer always keeps (``train.keep_checkpoints`` latest ones and the best), and
    Tune keeps every record folder (they are tiny), so a restored driver's older pointer
    still exists. PBT copies one trial's checkpoint into another while the first goes on pruning its
    own, and remote storage keeps the trainer's checkpoints in a scratch folder, so both get
    the whole checkpoint.
    """

    def __init__(
        self,
        spec: TrialSpec,
        *,
        fold: int | None,
        resumed_from: dict[str, Any] | None,
        tensorboard_dir: Path | None,
        final_epoch: int,
        scratch: Path,
        snapshots: SnapshotPublisher | None = None,
        hparams: dict[str, Any] | None = None,
        run_root: Path | None = None,
    ) -> None:
        import ray

        self.spec = spec
        self.run_root = run_root
        self.snapshots = snapshots
        self.final_epoch = final_epoch
        self.scratch = scratch
        self._pending: tuple[dict[str, Any], Path | None] | None = None
        self.fold = fold
        self.resumed = resumed_from is not None
        self.resumed_epoch = int(resumed_from.get("epoch", -1)) if resumed_from else -1
        self.best: float | None = resumed_from.get("best") if resumed_from else None
        self.node_id = ray.get_runtime_context().get_node_id()
        self.node_ip = ray.util.get_node_ip_address()
        self._writer = None
        self._lr_step = 0
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            tensorboard_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(tensorboard_dir))
            self._write_hparams(hparams or {})

    def _write_hparams(self, hparams: dict[str, Any]) -> None:
        """The trial's searched values as TensorBoard HParams, written when it starts.

        TensorBoard's HParams view reads a session's metrics from the run's scalars of the
        declared tags, so the per-epoch scalars below fill it in as the trial runs, and a
        trial the scheduler stops keeps what it reached (it gets no chance to write at the
        end). ``torch``'s ``add_hparams`` would write into a new sub-run; its summaries go
        into the trial's own run here.
        """
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        values = {
            k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in hparams.items()
        }
        tags = [f"val/{k}" for k in HPARAM_METRICS] + [f"trial/best_{self.spec.metric}"]
        experiment, start, _end = hparams_summary(values, {tag: 0.0 for tag in tags})
        writer = self._writer.file_writer
        writer.add_summary(experiment)
        writer.add_summary(start)
        self._writer.flush()

    def _better(self, value: float) -> bool:
        if self.best is None or math.isnan(self.best):
            return not math.isnan(value)
        return value > self.best if self.spec.mode == "max" else value < self.best

    def __call__(self, metrics: dict[str, Any]) -> None:
        out = dict(metrics)
        checkpoint_dir = out.pop("checkpoint_dir", None)
        lr_trace = out.pop("lr_trace", None)
        snapshot = out.pop("snapshot", None)
        if self.snapshots is not None:
            if snapshot is not None:
                self.snapshots(snapshot, out)
                out["snapshot_epoch"] = int(snapshot.epoch)
            self.snapshots.publish_pending()  # a dead attempt's, before Tune hears of the epoch
        epoch = int(out["epoch"])
        value = out.get(self.spec.metric)
        if value is not None and self._better(float(value)):
            self.best = float(value)
        out.update(
            {
                f"best_{self.spec.metric}": self.best if self.best is not None else float("nan"),
                "lr_cycles": epoch / self.spec.cycle_epochs,
                "node_ip": self.node_ip,
                "node_id": self.node_id,
                "resumed_from_epoch": self.resumed_epoch,
            }
        )
        if self.fold is not None:
            out["fold"] = self.fold
        if lr_trace:
            out["lr_points"] = lr_points(lr_trace)
        self._tensorboard(out, epoch, lr_trace)
        ckpt = self._tune_checkpoint(Path(checkpoint_dir), out) if checkpoint_dir else None
        if epoch >= self.final_epoch:
            # A scheduler stops a trial at its last epoch (max_t) as soon as it reports it,
            # which would cut off the predictions written after training: the last report is
            # held back until the predictions and weights are published (see flush). Nothing
            # touches the last checkpoint in between (the trainer only loads its best).
            self._pending = (out, ckpt)
        else:
            self._send(out, ckpt)
        if self.spec.fault_epoch == epoch and not self.resumed:
            raise InjectedFault(
                f"{FAULT_ENV}={self.spec.fault_epoch}: injected failure after epoch {epoch}"
            )

    def _tune_checkpoint(self, trainer_ckpt: Path, metrics: dict[str, Any]) -> Path:
        """The folder Tune gets for this epoch: the trainer's checkpoint with the best-epoch
        record beside it, or (by reference) a folder holding the record alone."""
        epoch = int(metrics["epoch"])
        record: dict[str, Any] = {
            "epoch": epoch,
            "best": self.best,
            "trainer_best_epoch": metrics.get("best_epoch"),
        }
        if self.run_root is None:
            atomic_write_json(trainer_ckpt / _BEST_FILE, record, what="best-epoch record")
            return trainer_ckpt
        record["trainer_checkpoint"] = trainer_ckpt.relative_to(self.run_root).as_posix()
        folder = self.scratch / "tune_checkpoints" / f"epoch_{epoch:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / _BEST_FILE, record, what="best-epoch record")
        return folder

    def _send(self, metrics: dict[str, Any], ckpt: Path | None) -> None:
        from ray import tune

        checkpoint = tune.Checkpoint.from_directory(str(ckpt)) if ckpt is not None else None
        tune.report(metrics, checkpoint=checkpoint)  # Tune has copied ckpt when this returns
        if ckpt is not None and self.run_root is not None:
            shutil.rmtree(ckpt, ignore_errors=True)  # the record folder, not the trainer's

    def flush(self) -> None:
        """Send the held-back last report (after predictions and weights are published)."""
        if self.snapshots is not None:
            self.snapshots.publish_pending()
        if self._pending is not None:
            metrics, ckpt = self._pending
            self._pending = None
            self._send(metrics, ckpt)

    def _tensorboard(self, metrics: dict[str, Any], epoch: int, lr_trace: Any) -> None:
        if self._writer is None:
            return
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                group = (
                    "val"
                    if key.startswith("val_")
                    else "train"
                    if key.startswith("train_")
                    else "trial"
                )
                self._writer.add_scalar(f"{group}/{key}", float(value), epoch)
        if lr_trace:
            # one point per optimizer step; the x axis counts steps across epochs
            steps = len(lr_trace)
            start = (epoch - 1) * steps
            for i, lr in enumerate(lr_trace):
                self._writer.add_scalar("lr/step", float(lr), start + i)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _restore(checkpoint: Any, scratch: Path) -> tuple[Path | None, dict[str, Any] | None]:
    """Tune's whole checkpoint -> (a local folder for the trainer, the running-best record)."""
    if checkpoint is None:
        return None, None
    local = Path(checkpoint.path)
    if not (checkpoint.filesystem.type_name == "local" and local.is_dir()):
        target = scratch / "resume"  # remote storage: download it first
        shutil.rmtree(target, ignore_errors=True)
        local = Path(checkpoint.to_directory(str(target)))
    best_file = local / _BEST_FILE
    record = json.loads(best_file.read_text()) if best_file.is_file() else {"epoch": -1}
    return local, record


def _own_checkpoint(
    spec: TrialSpec, work: Path, tune_record: dict[str, Any] | None
) -> tuple[Path | None, dict[str, Any] | None, list[dict[str, Any]]]:
    """Checkpoints by reference: resume from the trainer's newest checkpoint in RUN.

    The trainer's checkpoints in ``RUN/trial_<id>/work`` are the trial's own record; Tune's
    (``tune_record``, None when Tune has none) can be older: a driver killed after a report
    and before its next experiment snapshot (at most ``TUNE_GLOBAL_CHECKPOINT_S`` later)
    restores the trial from the checkpoint of that snapshot, or from none, though the trial
    went on, or even finished. Resuming from the newest checkpoint continues where the trial
    really was; the epochs Tune has not seen (after ``tune_record``'s) are returned from the
    checkpoint's history so the caller reports them again. Returns (folder, record, those
    epochs); (None, None, []) for a trial with no checkpoint yet.
    """
    found = _newest_checkpoint(work / "checkpoints")
    if found is None:
        return None, None, []
    path, state, history = found
    progress = (state.get("extra") or {}).get("progress") or {}
    values = [float(h[spec.metric]) for h in history
              if h.get(spec.metric) is not None and not math.isnan(float(h[spec.metric]))]  # fmt: skip
    best = (max(values) if spec.mode == "max" else min(values)) if values else None
    record = {"epoch": int(state["epoch"]), "best": best,
              "trainer_best_epoch": progress.get("best_epoch")}  # fmt: skip
    seen = int((tune_record or {}).get("epoch", 0))
    return path, record, [h for h in history if int(h["epoch"]) > seen]


def _newest_checkpoint(root: Path) -> tuple[Path, dict[str, Any], list[dict[str, Any]]] | None:
    """The trainer's newest readable checkpoint under ``root``: (folder, its state, its
    per-epoch history); None when there is none."""
    from trainers.checkpoint import CheckpointError, read_checkpoint_state

    done = sorted(p for p in root.glob("epoch_*") if p.is_dir()) if root.is_dir() else []
    for path in reversed(done):  # visible folders are complete (written atomically)
        try:
            state = read_checkpoint_state(path)
        except CheckpointError:
            continue
        progress = (state.get("extra") or {}).get("progress") or {}
        return path, state, list(progress.get("history") or [])
    return None


def _resume_point(
    spec: TrialSpec, checkpoint: Any, work: Path, scratch: Path, by_reference: bool
) -> tuple[Path | None, dict[str, Any] | None, list[dict[str, Any]]]:
    """Where the trial continues: (checkpoint folder, running-best record, epochs to report
    again); by reference from the trainer's own newest checkpoint, else from Tune's."""
    if by_reference:
        return _own_checkpoint(spec, work, _restore(checkpoint, scratch)[1])
    resume_from, record = _restore(checkpoint, scratch)
    _restore_best(checkpoint, record, work)
    return resume_from, record, []


def _finished(run: RunStorage, trial_id: str, record: dict[str, Any] | None, epochs: int) -> bool:
    """Whether the trial already ran to its last epoch and published its predictions and
    weights (a restored driver did not know): it is reported again, not trained again."""
    return bool(
        record
        and record["epoch"] >= epochs
        and run.exists(RUN_LAYOUT.prediction(trial_id))
        and run.exists(RUN_LAYOUT.model_config(trial_id))
    )


def _restore_best(checkpoint: Any, record: dict[str, Any] | None, work: Path) -> None:
    """Put the trainer's best checkpoint back into ``work`` when a resumed trial lacks it.

    The trainer predicts with ``work/checkpoints/epoch_<best>`` after its last epoch. A trial
    resumed on another node (or with remote storage) starts from an empty work folder and
    gets only the latest checkpoint from Tune; Tune also keeps the best one (the checkpoint
    config scores by the trainer's selection metric), so it is found among the trial's
    persisted checkpoints by the record written next to each.
    """
    best = (record or {}).get("trainer_best_epoch")
    if checkpoint is None or best is None or (record or {}).get("trainer_checkpoint"):
        return  # by reference: the trainer's checkpoints, its best among them, are in RUN
    target = work / "checkpoints" / f"epoch_{int(best):04d}"
    if target.is_dir():
        return
    import posixpath

    import pyarrow.fs as pafs

    fs = checkpoint.filesystem
    parent = posixpath.dirname(checkpoint.path.rstrip("/"))
    selector = pafs.FileSelector(parent, allow_not_found=True)
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        marker = posixpath.join(info.path, _BEST_FILE)
        if fs.get_file_info(marker).type == pafs.FileType.NotFound:
            continue
        with fs.open_input_stream(marker) as f:
            if json.loads(f.read().decode()).get("epoch") != best:
                continue
        target.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(info.path, str(target), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())  # fmt: skip
        return


def _publish(
    run: RunStorage, result: Any, config: TrialConfig, trial_id: str, pred_path: Path | None
) -> None:
    """Copy the best weights (+ config.json) and, for remote storage, the predictions."""
    from trainers.config import config_hash

    if pred_path is not None and not run.local and pred_path.is_file():
        run.upload_file(pred_path, RUN_LAYOUT.prediction(trial_id))
    ckpt = Path(result.checkpoint_dir) if result.checkpoint_dir else None
    weights = ckpt / "model.safetensors" if ckpt else None
    if weights is None or not weights.is_file():
        return
    class_names = None
    if pred_path is not None and pred_path.is_file():
        from trainers.predictions import read_predictions

        class_names = read_predictions(pred_path).class_names
    meta = {
        "trial_id": trial_id,
        "best_epoch": result.best_epoch,
        "best_metrics": result.best_metrics,
        "config_hash": getattr(result, "config_hash", None) or config_hash(config),
        "class_names": class_names,
        "config": config.model_dump(mode="json"),
    }
    publish_member(run, trial_id, weights, meta)


class SnapshotPublisher:
    """Publishes a snapshot as a member of its own: its weights (+ config.json) in
    ``RUN/models/<snapshot id>/`` and, for remote storage, its predictions.

    The trainer writes a snapshot's weights under ``WORK/snapshots/<id>/`` and then its
    predictions; publishing moves the weights out (one copy on disk, not two). Weights still
    there beside a written prediction file are a snapshot a killed attempt wrote and never
    published: :meth:`publish_pending` publishes them, with that epoch's metrics from the
    trainer's checkpoint history. The reporter calls it on every report and before its last,
    so a resumed trial publishes what the dead attempt left before Tune hears of it.
    """

    def __init__(
        self, run: RunStorage, config: TrialConfig, work: Path, predictions_dir: Path
    ) -> None:
        from trainers.config import config_hash

        self.run = run
        self.config = config
        self.weights_root = work / "snapshots"
        self.checkpoints = work / "checkpoints"
        self.predictions_dir = predictions_dir
        self.chash = config_hash(config)
        self.class_names: list[str] = []  # read from the first snapshot's file, the same for all

    def __call__(self, snapshot: Any, metrics: dict[str, Any]) -> None:
        from trainers.predictions import read_predictions

        if not self.run.local:
            self.run.upload_file(Path(snapshot.predictions), RUN_LAYOUT.snapshot(snapshot.id))
        if not self.class_names:
            self.class_names.extend(read_predictions(snapshot.predictions).class_names)
        meta = {
            "trial_id": snapshot.id,
            "snapshot_of": snapshot.trial_id,
            "epoch": snapshot.epoch,
            "cycle": snapshot.cycle,
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
            "config_hash": self.chash,
            "class_names": list(self.class_names),
            "config": self.config.model_dump(mode="json"),
        }
        publish_member(self.run, snapshot.id, Path(snapshot.weights), meta)
        # the published copy is the one every later stage reads: one copy on disk, not two
        Path(snapshot.weights).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            Path(snapshot.weights).parent.rmdir()

    def publish_pending(self) -> list[str]:
        """Publish every snapshot a dead attempt wrote and did not publish; their ids."""
        from trainers.checkpoint import MODEL_FILE
        from trainers.loop import Snapshot
        from trainers.optim import cycle_of

        if not self.weights_root.is_dir():
            return []
        done = []
        for weights in sorted(self.weights_root.glob(f"*@e*/{MODEL_FILE}")):
            sid = weights.parent.name
            trial_id, _, epoch = sid.rpartition("@e")
            predictions = RUN_LAYOUT.snapshot_under(self.predictions_dir, sid)
            if not (epoch.isdigit() and predictions.is_file()):
                continue  # its predictions were never written: the trainer writes both again
            cycle = cycle_of(self.config.schedule, int(epoch))
            snap = Snapshot(sid, trial_id, int(epoch), cycle, predictions, weights)
            self(snap, self._epoch_metrics(int(epoch)))
            done.append(sid)
        return done

    def _epoch_metrics(self, epoch: int) -> dict[str, Any]:
        """``epoch``'s row of the newest readable checkpoint's history ({} if none has it)."""
        found = _newest_checkpoint(self.checkpoints)
        history = found[2] if found else []
        return next((dict(h) for h in history if int(h.get("epoch", -1)) == epoch), {})


def _output_dirs(
    run: RunStorage, spec: TrialSpec, trial_id: str, scratch: Path
) -> tuple[Path, Path | None]:
    """Where the trainer writes predictions and TensorBoard events: in RUN for local storage,
    else under the same names in the attempt's scratch (uploaded when the trial ends)."""
    if run.local:
        predictions_dir = run.local_path(RUN_LAYOUT.predictions)
        tb_dir = run.local_path(RUN_LAYOUT.tensorboard_dir(trial_id)) if spec.tensorboard else None
    else:
        predictions_dir = scratch / RUN_LAYOUT.predictions
        tb_dir = scratch / RUN_LAYOUT.tensorboard if spec.tensorboard else None
    predictions_dir.mkdir(parents=True, exist_ok=True)
    return predictions_dir, tb_dir


def _reporter(
    spec: TrialSpec,
    config: TrialConfig,
    tune_config: dict[str, Any],
    record: dict[str, Any] | None,
    tb_dir: Path | None,
    scratch: Path,
    snapshots: SnapshotPublisher,
    run_root: Path | None,
) -> TuneReporter:
    return TuneReporter(
        spec,
        fold=config.data.split.fold if (spec.folds or FOLD_KEY in spec.searched) else None,
        resumed_from=record,
        tensorboard_dir=tb_dir,
        final_epoch=config.train.epochs,
        scratch=scratch,
        snapshots=snapshots,
        hparams=trial_overrides(tune_config, spec.folds),
        run_root=run_root,
    )


def _run_trial(tune_config: dict[str, Any], spec: TrialSpec, train_fn: TrainFn | None) -> None:
    import logging

    from ray import tune

    import ray

    # one INFO line per persisted checkpoint would drown the live table
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    fn = train_fn or resolve_train_fn(spec.train_fn)
    context = tune.get_context()
    trial_id = context.get_trial_id()
    trial_dir = Path(context.get_trial_dir())
    config = trial_config(spec, tune_config)
    run = RunStorage.open(spec.storage, spec.name)
    scratch = Path(tempfile.mkdtemp(prefix=f"wen-{trial_id}-"))
    try:
        checkpoint = tune.get_checkpoint()
        # the trainer's own checkpoints: in RUN for local storage (shared by retries on any
        # node), else in this attempt's scratch. Never in Tune's trial folder (``trial_dir``):
        # Tune copies it to storage on every checkpoint report, racing the trainer's files.
        work = run.local_path(trial_dir.name, "work") if run.local else scratch / "work"
        by_reference = spec.checkpoint_by_reference and run.local
        resume_from, record, unseen = _resume_point(spec, checkpoint, work, scratch, by_reference)
        predictions_dir, tb_dir = _output_dirs(run, spec, trial_id, scratch)
        snapshots = SnapshotPublisher(run, config, work, predictions_dir)
        run_root = run.local_path() if by_reference else None
        reporter = _reporter(
            spec, config, tune_config, record, tb_dir, scratch, snapshots, run_root
        )
        for metrics in unseen:  # epochs the trial ran that Tune has not recorded
            reporter(dict(metrics))
        if by_reference and _finished(run, trial_id, record, config.train.epochs):
            reporter.close()
            reporter.flush()
            return
        # Ray gave this trial GPUs: the trainer must use one or fail saying why, never
        # train on the CPU (CUDA_VISIBLE_DEVICES says the same unless Ray was told not to set it)
        gpu = {"expect_gpu": True} if ray.get_gpu_ids() else {}
        try:
            result = fn(
                config,
                reporter,
                out_dir=work,
                trial_id=trial_id,
                resume_from=resume_from,
                predictions_dir=predictions_dir,
                **gpu,
            )
        finally:
            reporter.close()
            if tb_dir is not None and not run.local and tb_dir.is_dir():
                run.upload_dir(tb_dir, RUN_LAYOUT.tensorboard_dir(trial_id))
        pred = Path(result.predictions_path) if result.predictions_path else None
        _publish(run, result, config, trial_id, pred)
        reporter.flush()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def make_trainable(
    spec: TrialSpec, train_fn: TrainFn | None = None
) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable for ``spec``; ``train_fn`` replaces ``spec.train_fn`` in tests."""

    def wen_trial(tune_config: dict[str, Any]) -> None:
        _run_trial(tune_config, spec, train_fn)

    return wen_trial


def fault_epoch_from_env() -> int | None:
    """The ``WEN_FAULT_INJECT`` epoch (test hook), or None."""
    raw = os.environ.get(FAULT_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{FAULT_ENV} must be an epoch number >= 1, got {raw!r}")
    return int(raw)
