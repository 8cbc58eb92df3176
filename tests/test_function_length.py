"""No function in the packages is longer than 60 lines unless a comment says why.

A function's length is its lines from ``def`` to its last line, less its docstring. A longer
one needs a comment ``# long: <why>`` on the line above its ``def`` (or above its first
decorator); the test lists every function that has neither.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "trainers", "ensemble", "reports", "benchmarks")
LIMIT = 60
MARKER = "# long:"


def function_lengths(source: str) -> list[tuple[str, int, int, bool]]:
    """``(name, first line, length, has the marker)`` of every function in ``source``."""
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = node.end_lineno - node.lineno + 1
        first = node.body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            length -= first.end_lineno - first.lineno + 1
        top = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        above = lines[top - 2].strip() if top >= 2 else ""
        out.append((node.name, node.lineno, length, above.startswith(MARKER)))
    return out


def test_the_counter_sees_length_docstrings_and_the_marker() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    source = textwrap.dedent('''
        def short():
            """A docstring
            of three
            lines."""
            return 1

        # long: a table of constants
        @staticmethod
        def marked():
        {body}

        def unmarked():
        {body}
    ''').format(body=body)
    found = {name: (length, marked) for name, _, length, marked in function_lengths(source)}
    assert found["short"] == (2, False)
    assert found["marked"] == (LIMIT + 1, True)
    assert found["unmarked"] == (LIMIT + 1, False)


def test_no_function_is_longer_than_60_lines_without_a_reason() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name, line, length, marked in function_lengths(path.read_text()):
                if length > LIMIT and not marked:
                    offenders.append(f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)")
    assert not offenders, (
        f"functions longer than {LIMIT} lines (docstring not counted); split them along their "
        f"seams, or put `{MARKER} <why>` on the line above the def:\n" + "\n".join(offenders)
    )
