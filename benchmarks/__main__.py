"""``python -m benchmarks [names...]``: run the benchmark modules and print one table.

Every ``benchmarks/bench_<name>.py`` module exposes ``run() -> list[dict]``; each dict is one
figure with ``name``, ``value``, ``unit``, ``target`` and ``note``. A target is a comparison
such as ``">= 10"`` or ``"<= 10"``; the ``met`` column says whether the value meets it.
``WEN_BENCH_QUICK=1`` asks the modules for a smaller, faster run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import operator
import sys
import time
import traceback
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
COLUMNS = ("name", "value", "unit", "target", "met", "note")


def available() -> list[str]:
    """Benchmark names (``bench_loading.py`` -> ``loading``), sorted."""
    return sorted(p.stem[len("bench_") :] for p in _HERE.glob("bench_*.py"))


def meets(value: object, target: str) -> str:
    """``"yes"``/``"no"`` when ``target`` is a comparison like ``">= 10"``, else ``"-"``."""
    text = (target or "").strip()
    for sym in sorted(_OPS, key=len, reverse=True):
        if text.startswith(sym):
            try:
                bound = float(text[len(sym) :].strip().rstrip("x%").strip())
                number = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return "-"
            if math.isnan(number):
                return "no"
            return "yes" if _OPS[sym](number, bound) else "no"
    return "-"


def _format_value(value: object) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-2):
            return f"{value:.3g}"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table with the columns :data:`COLUMNS`."""
    cells = [[str(c) for c in COLUMNS]]
    for r in rows:
        cells.append(
            [
                str(r.get("name", "")),
                _format_value(r.get("value", "")),
                str(r.get("unit", "")),
                str(r.get("target", "")),
                meets(r.get("value"), str(r.get("target", ""))),
                str(r.get("note", "")),
            ]
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = []
    for k, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i != 1 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            ).rstrip()
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_benchmarks(names: list[str]) -> list[dict[str, Any]]:
    """Run the named benchmark modules (all when empty); a failure becomes one error row."""
    known = available()
    unknown = [n for n in names if n.removeprefix("bench_") not in known]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; valid names: {', '.join(known)}")
    rows: list[dict[str, Any]] = []
    for name in [n.removeprefix("bench_") for n in names] or known:
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.bench_{name}")
            rows.extend(module.run())
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            rows.append(
                {
                    "name": f"{name}: FAILED",
                    "value": float("nan"),
                    "unit": "",
                    "target": "",
                    "note": f"{type(exc).__name__}: {exc}",
                }
            )
        print(f"[{name}: {time.perf_counter() - start:.1f} s]", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", help=f"benchmarks to run ({', '.join(available())})")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    rows = run_benchmarks(args.names)
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 1 if any(r["name"].endswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
