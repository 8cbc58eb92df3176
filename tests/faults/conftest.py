"""Fixtures of the fault-injection suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from fault_helpers import ensemble_fixtures


@pytest.fixture
def prediction_run(tmp_path: Path) -> Path:
    """RUN/predictions/: 3 backbones x 2 configurations x 2 folds (trials t000..t011)."""
    return ensemble_fixtures().write_run(tmp_path / "run")
