"""Fixtures of the report tests: a complete smoke run folder and its report (session-wide).

See ``_smoke_run.py`` for how the run folder is assembled from the stages' real writers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _smoke_run import build_smoke_run


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run folder (search + ensemble outputs), built once per session."""
    return build_smoke_run(tmp_path_factory.mktemp("smoke"))


@pytest.fixture(scope="session")
def smoke_report(smoke_run: Path) -> Path:
    """The report of ``smoke_run`` (two Grad-CAM images), built once per session."""
    from reports import build_report

    return build_report(smoke_run, gradcam_images=2, progress=False)
