"""The report's sections, one module each, in the report's order (``reports.build.SECTIONS``):

* ``search``: 1. search summary;
* ``ensembles``: 2. members and ensembles (the study's Tables 4 and 5, extended);
* ``curves``: 3. ROC, calibration and per-subject accuracy;
* ``explain``: 4. Grad-CAM;
* ``reproducibility``: 5. reproducibility.

Each module names its ``TITLE``, ``KEY`` (the section's anchor), ``LABEL`` (the progress bar's)
and ``SUBSECTIONS``: (heading, subsection) pairs in order. A subsection is a module-level
function ``ReportContext -> list of blocks`` that raises ``MissingInput`` when an input is
absent, so each one can be called alone; ``guard`` turns that into a note in the report.
Helpers more than one section uses live in ``_common``.
"""

from reports.sections._common import ReportContext, Subsection, SubsectionTable, guard

__all__ = ["ReportContext", "Subsection", "SubsectionTable", "guard"]
