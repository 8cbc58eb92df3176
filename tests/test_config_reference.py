"""The configuration reference (docs/CONFIG.md) is generated from the typed models and current."""

from __future__ import annotations

from pathlib import Path

import yaml

from search.config_reference import config_reference, reference_rows

REPO = Path(__file__).resolve().parents[1]


def _leaf_keys(node: object, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix.rstrip(".")]
    keys: list[str] = []
    for key, value in node.items():
        if prefix == "search." and key == "space":  # its keys are dimension names, not fields
            keys.append("search.space")
            continue
        keys += _leaf_keys(value, f"{prefix}{key}.")
    return keys


def test_docs_config_md_is_current() -> None:
    current = (REPO / "docs" / "CONFIG.md").read_text()
    assert current == config_reference(), (
        "docs/CONFIG.md is out of date: run `python -m search.config_reference > docs/CONFIG.md`"
    )


def test_every_key_is_documented() -> None:
    from search.config import WenConfig

    rows = reference_rows(WenConfig)
    undocumented = [r["key"] for r in rows if not r["description"]]
    assert not undocumented, f"config fields without a description: {undocumented}"
    assert len({r["key"] for r in rows}) == len(rows)


def test_every_key_of_the_presets_is_in_the_reference() -> None:
    from search.config import WenConfig

    known = {r["key"] for r in reference_rows(WenConfig)}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        missing = [k for k in _leaf_keys(raw) if k not in known]
        assert not missing, f"{path.name}: keys missing from the reference: {missing}"
