"""The presets (the demo, the tests' smoke search and one per study), shipped as package data.

Installed as the package ``wen_presets`` (``pyproject.toml`` maps it to this folder), so
``wen search mondal2021`` and ``wen demo`` find them without a checkout; see
``search/presets.py``.
"""
