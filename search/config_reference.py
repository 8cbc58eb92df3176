"""The configuration reference, generated from the typed config models.

Every key a YAML config (or ``--set``) accepts, with its type, default and description, read
from the pydantic models that validate it, so the reference cannot drift from the code.
``docs/CONFIG.md`` is this module's output; a test checks that it is current::

    python -m search.config_reference > docs/CONFIG.md
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from search.config import WenConfig

__all__ = ["config_reference", "reference_rows"]

_HEADER = """# Configuration reference

Generated from the typed models (`trainers/config.py`, `search/config.py`,
`ensemble/config.py`) by `python -m search.config_reference > docs/CONFIG.md`; a test keeps it
current. Every key can be set in the YAML file or on the command line with
`--set key.path=value` (the value is read as YAML: `--set 'search.folds=[0, 1]'`). Unknown keys
are errors that list the allowed keys; out-of-range values are errors that state the rule.
Search dimensions (`search.space`) may name any trial key below.
"""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The config model inside ``annotation`` (``X``, ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [
            a
            for a in typing.get_args(annotation)
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if len(models) == 1:
            return models[0]
    return None


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # LocalPath: a Path with its validator
        return _type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{json.dumps(value, default=str)}`"


def _bounds(field: FieldInfo) -> str:
    """The numeric rules pydantic checks (``ge=1`` -> ``>= 1``)."""
    rules = []
    for meta in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                rules.append(f"{sym} {value}")
    return ", ".join(rules)


def reference_rows(model: type[BaseModel], prefix: str = "") -> list[dict[str, str]]:
    """One row per leaf key of ``model``: key path, type, default, rule, description."""
    rows: list[dict[str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub = _model_of(field.annotation)
        if sub is not None:
            rows += reference_rows(sub, prefix=f"{key}.")
            continue
        rows.append(
            {
                "key": key,
                "type": _type_name(field.annotation),
                "default": _default(field),
                "rule": _bounds(field),
                "description": " ".join((field.description or "").split()),
            }
        )
    return rows


def config_reference() -> str:
    """The whole reference as Markdown: one table per top-level section."""
    rows = reference_rows(WenConfig)
    sections: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        top = row["key"].split(".")[0] if "." in row["key"] else "(top level)"
        sections.setdefault(top, []).append(row)
    lines = [_HEADER]
    for section, items in sections.items():
        lines += [
            f"## `{section}`" if section != "(top level)" else "## Top level",
            "",
            "| key | type | default | rule | description |",
            "|---|---|---|---|---|",
        ]
        for r in items:
            desc = r["description"].replace("|", "\\|")
            lines.append(f"| `{r['key']}` | {r['type']} | {r['default']} | {r['rule']} | {desc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(config_reference(), end="")
