"""Performance benchmarks: each ``bench_*.py`` module has ``run() -> list[dict]``.

Run them all with ``python -m benchmarks`` (or ``make bench``), or some by name:
``python -m benchmarks loading``. Each figure is a dict with ``name``, ``value``, ``unit``,
``target`` (for example ``">= 10"``, or ``""`` when there is none) and ``note``.
"""
