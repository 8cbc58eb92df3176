"""Fault 10: a checkpoint carrying a pickled payload, or weights of the wrong shapes.

The unit tests (tests/trainers/test_checkpoints.py) call ``load_checkpoint`` directly; here a
trial is resumed from the bad checkpoint, as Tune's retry would, and must refuse it before
training an epoch - without ever running the payload's code.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

from fault_helpers import tiny_trial
from trainers import load_config, train
from trainers.checkpoint import CheckpointError


class _Payload:
    """Unpickling this creates ``marker``: proof that the checkpoint's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good epoch-1 checkpoint of the tiny trial."""
    out = tmp_path_factory.mktemp("ckpt")
    raw = tiny_trial()
    raw["train"].update(epochs=1, max_steps_per_epoch=2)
    train(load_config(raw), out_dir=out, trial_id="c")
    return out / "checkpoints" / "epoch_0001"


@pytest.mark.parametrize("file", ["model.safetensors", "state.safetensors"])
def test_pickled_payload_is_refused_and_never_run(
    checkpoint: Path, tmp_path: Path, file: str
) -> None:
    bad = Path(shutil.copytree(checkpoint, tmp_path / "epoch_0001"))
    marker = tmp_path / "payload-ran"
    (bad / file).write_bytes(pickle.dumps({"weights": _Payload(marker)}))
    epochs: list[dict] = []
    with pytest.raises(CheckpointError) as info:
        train(load_config(tiny_trial()), epochs.append, out_dir=tmp_path / "work", resume_from=bad)
    message = str(info.value)
    assert str(bad / file) in message and "pickled or corrupt payloads are refused" in message
    assert not marker.exists()  # nothing was unpickled
    assert epochs == [] and not (tmp_path / "work" / "checkpoints").exists()


def test_weights_of_the_wrong_shape_give_a_clear_error(checkpoint: Path, tmp_path: Path) -> None:
    raw = tiny_trial()
    raw["model"].update(head="dense_dropout", head_hidden=16)
    other = tmp_path / "other"
    raw["train"].update(epochs=1, max_steps_per_epoch=1)
    train(load_config(raw), out_dir=other, trial_id="o")
    # a two-layer head 16 units wide, resumed by a trial whose head is 32 wide
    raw["model"]["head_hidden"] = 32
    raw["train"]["epochs"] = 2
    epochs: list[dict] = []
    with pytest.raises(CheckpointError) as info:
        train(
            load_config(raw),
            epochs.append,
            out_dir=tmp_path / "work",
            resume_from=other / "checkpoints" / "epoch_0001",
        )
    message = str(info.value)
    assert "model.safetensors" in message and "has shape" in message and "(16," in message
    assert "the model expects" in message and "another model or head" in message
    assert epochs == []
    # weights of another architecture altogether name the foreign tensors
    with pytest.raises(CheckpointError, match="do not exist in the model|are missing"):
        train(
            load_config(tiny_trial()),
            out_dir=tmp_path / "work2",
            resume_from=other / "checkpoints" / "epoch_0001",
        )
