"""Every error class the project defines derives from the one root, ``WenError``."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from trainers.errors import WenError

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("trainers", "search", "ensemble", "reports")


def _error_classes() -> list[tuple[str, str]]:
    """(module, class) for every top-level ``class *Error`` in the packages."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(
                ".__init__"
            )
            found += [
                (module, node.name)
                for node in tree.body
                if isinstance(node, ast.ClassDef) and node.name.endswith("Error")
            ]
    return found


ERRORS = _error_classes()


def test_the_scan_finds_the_errors() -> None:
    # a scan that finds nothing would pass the test below vacuously
    assert len(ERRORS) >= 19 and ("trainers.config", "ConfigError") in ERRORS


@pytest.mark.parametrize(("module", "name"), ERRORS, ids=[f"{m}.{n}" for m, n in ERRORS])
def test_error_derives_from_wen_error(module: str, name: str) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, WenError), f"{module}.{name} must derive from trainers.errors.WenError"


def test_builtin_bases_are_kept() -> None:
    # callers catch these as ValueError / RuntimeError / KeyError
    from search.run import SearchError
    from trainers._registry import UnknownNameError
    from trainers.config import ConfigError
    from trainers.data.layouts import LayoutError

    assert issubclass(ConfigError, ValueError) and issubclass(LayoutError, ValueError)
    assert issubclass(SearchError, RuntimeError)
    assert issubclass(UnknownNameError, KeyError) and issubclass(UnknownNameError, ValueError)
