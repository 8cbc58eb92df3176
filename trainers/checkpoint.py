"""Checkpoints without pickle: weights as safetensors, everything else as tensors + JSON.

A checkpoint is a folder::

    model.safetensors   the model's state_dict
    state.safetensors   every tensor of the optimizer, scheduler, grad scaler and RNG states
    state.json          the rest of those states as plain JSON, tensors replaced by references

written atomically (``trainers._atomic.staged_folder``: a ``.NAME.tmp-*`` folder, fsynced,
swapped in), so a crash leaves either no checkpoint or a complete one. Loading reads only safetensors and JSON: nothing is
ever unpickled.

>>> import tempfile, pathlib, torch
>>> model = torch.nn.Linear(2, 2)
>>> opt = torch.optim.Adam(model.parameters())
>>> d = save_checkpoint(pathlib.Path(tempfile.mkdtemp()) / "epoch_0001", model, opt, None,
...                     epoch=1, metrics={"val_wfs": 0.5}, rng_state=capture_rng_state())
>>> load_checkpoint(d, model, opt)["epoch"]
1
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers._atomic import atomic_path, staged_folder
from trainers.errors import WenError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "save_model_weights",
]

CHECKPOINT_FORMAT = 1
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
JSON_FILE = "state.json"


class CheckpointError(WenError, RuntimeError):
    """A checkpoint that is missing, incomplete, pickled or does not fit the model."""


# ------------------------------------------------------------------------- tensor <-> JSON


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Nested state -> JSON-able structure; tensors/arrays go to ``tensors`` under ``path``.

    Hand-written because torch's own state_dict format is pickle-only; tags keep the Python
    types that JSON would lose (int dict keys, tuples, numpy arrays).
    """
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj)).clone()
        return {"__ndarray__": path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, f"{path}.{k}", tensors) for k, v in obj.items()}
        if all(isinstance(k, int) and not isinstance(k, bool) for k in obj):
            return {
                "__int_dict__": [[k, _encode(v, f"{path}.{k}", tensors)] for k, v in obj.items()]
            }
        raise CheckpointError(f"{path}: dict keys must be all str or all int, got {list(obj)[:5]}")
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(
        f"{path}: cannot store a {type(obj).__name__} without pickle; only tensors, numbers, "
        "strings, lists, tuples and dicts are saved"
    )


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy()
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__int_dict__" in obj:
            return {int(k): _decode(v, tensors) for k, v in obj["__int_dict__"]}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    return obj


# ------------------------------------------------------------------------------------ RNG


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA when present) random states, ready to store."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` returned (after a save/load round trip)."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        np.random.set_state(tuple(state["numpy"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


# ---------------------------------------------------------------------------------- saving


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    epoch: int,
    metrics: dict[str, Any],
    rng_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder at ``directory`` atomically (replacing an old one there).

    ``extra`` holds further JSON-able or tensor state (for example a grad scaler's).
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "metrics": _encode(metrics, "metrics", tensors),
        "optimizer": _encode(optimizer.state_dict(), "optimizer", tensors) if optimizer else None,
        "scheduler": _encode(scheduler.state_dict(), "scheduler", tensors) if scheduler else None,
        "rng": _encode(rng_state, "rng", tensors) if rng_state is not None else None,
        "extra": _encode(extra or {}, "extra", tensors),
    }
    # the old checkpoint at ``directory`` stays until the new one is complete and in place
    intact = (
        f"the partial copy was removed and earlier checkpoints in {directory.parent} are intact"
    )
    with staged_folder(
        directory, "checkpoint", intact=intact, then="resume from the latest of them"
    ) as tmp:
        # save_model handles tied (shared) parameters, which save_file refuses
        save_model(model, str(tmp / MODEL_FILE))
        from safetensors.torch import save_file

        save_file(tensors, str(tmp / STATE_FILE))
        (tmp / JSON_FILE).write_text(json.dumps(payload, indent=1))
    return directory


def save_model_weights(path: str | Path, model: torch.nn.Module) -> Path:
    """Write ``model``'s weights alone (a snapshot's) as one safetensors file, atomically."""
    from safetensors.torch import save_model

    path = Path(path)
    with atomic_path(path, what="model weights") as tmp:
        # save_model handles tied (shared) parameters, which save_file refuses
        save_model(model, str(tmp))
    return path


# --------------------------------------------------------------------------------- loading


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing; the checkpoint is incomplete")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({exc}); pickled or corrupt payloads are "
            "refused: re-create the checkpoint"
        ) from None


def _load_model_weights(path: Path, model: torch.nn.Module) -> None:
    sd = _read_safetensors(path)
    own = model.state_dict()
    unexpected = sorted(set(sd) - set(own))
    if unexpected:
        raise CheckpointError(
            f"{path}: tensor(s) {unexpected[:3]} do not exist in the model; the checkpoint is "
            "from another model"
        )
    for key, value in own.items():
        if key not in sd:
            # safetensors' save_model stores one name for tied tensors; those come back below
            continue
        if tuple(sd[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {tuple(sd[key].shape)}, the model expects "
                f"{tuple(value.shape)}; the checkpoint is from another model or head"
            )
    from safetensors.torch import load_model

    # load_model knows which tied (shared) tensors save_model stored once
    missing, _ = load_model(model, str(path), strict=False)
    if missing:
        raise CheckpointError(
            f"{path}: tensor(s) {sorted(missing)[:3]} are missing; the checkpoint is from another "
            "model or incomplete"
        )


def read_checkpoint_state(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's JSON state with tensors put back (no model needed)."""
    directory = Path(directory)
    json_path = directory / JSON_FILE
    if not json_path.is_file():
        raise CheckpointError(
            f"{directory} is not a checkpoint: {JSON_FILE} is missing (checkpoints are folders "
            f"holding {MODEL_FILE}, {STATE_FILE} and {JSON_FILE})"
        )
    try:
        payload = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{json_path}: not valid JSON ({exc})") from None
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{json_path}: checkpoint format {payload.get('format')!r} is not supported "
            f"(this code reads format {CHECKPOINT_FORMAT})"
        )
    tensors = _read_safetensors(directory / STATE_FILE)
    try:
        return _decode(payload, tensors)
    except KeyError as exc:
        raise CheckpointError(f"{directory / STATE_FILE}: tensor {exc} is missing") from None


def load_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
) -> dict[str, Any]:
    """Restore ``model`` (and ``optimizer``/``scheduler`` when given) from a checkpoint folder.

    Returns the state dict: ``epoch``, ``metrics``, ``rng`` (pass it to
    :func:`restore_rng_state`), ``extra``. Never unpickles anything.
    """
    directory = Path(directory)
    state = read_checkpoint_state(directory)
    _load_model_weights(directory / MODEL_FILE, model)
    if optimizer is not None:
        if state.get("optimizer") is None:
            raise CheckpointError(f"{directory}: holds no optimizer state to resume from")
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        if state.get("scheduler") is None:
            raise CheckpointError(f"{directory}: holds no scheduler state to resume from")
        scheduler.load_state_dict(state["scheduler"])
    return state
