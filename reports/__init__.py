"""Reports: tables, figures, Grad-CAM and the Markdown/HTML report of a run folder.

Reads only what the other stages wrote (``RUN/results.*``, ``RUN/predictions``, ``RUN/models``,
``RUN/tensorboard``, ``RUN/ensemble``, ``RUN/config.yaml``, ``RUN/command.txt``) and writes
``RUN/report/``.

>>> from reports import build_report
>>> build_report("runs/smoke")  # doctest: +SKIP
PosixPath('runs/smoke/report')
"""

from reports._inputs import MissingInput, RunInputs, load_run
from reports.browser import PageCheck, inspect_html, screenshot_html
from reports.build import build_report
from ensemble.calibration import brier_score, expected_calibration_error, reliability_curve
from reports.gradcam import (
    GradCamError,
    GradCamTarget,
    find_gradcam_target,
    gradcam_maps,
    gradcam_target_layer,
    load_trial_model,
)
from reports.tables import latex_table, markdown_table

__all__ = [
    "GradCamError",
    "GradCamTarget",
    "MissingInput",
    "PageCheck",
    "RunInputs",
    "brier_score",
    "build_report",
    "expected_calibration_error",
    "find_gradcam_target",
    "gradcam_maps",
    "gradcam_target_layer",
    "inspect_html",
    "latex_table",
    "load_run",
    "load_trial_model",
    "markdown_table",
    "reliability_curve",
    "screenshot_html",
]
