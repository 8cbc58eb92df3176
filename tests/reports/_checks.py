"""Checks of report files shared by the report tests."""

from __future__ import annotations

import re
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path: Path) -> tuple[int, int]:
    """The file starts with the PNG signature and PIL decodes it fully; returns its size."""
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} does not start with the PNG signature"
    with Image.open(path) as image:
        image.verify()  # checks the chunks' CRCs
    with Image.open(path) as image:
        image.load()  # decodes every pixel
        assert image.format == "PNG"
        assert image.width > 10 and image.height > 10, f"{path} is {image.size}"
        return image.size


def braces_balanced(text: str) -> bool:
    """Unescaped { and } pair up and never close before they open."""
    depth = 0
    for ch in re.sub(r"\\[{}]", "", text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def latex_body_rows(text: str) -> list[str]:
    """The data rows of a booktabs tabular: the lines between \\midrule and \\bottomrule."""
    body = text.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    return [line.strip() for line in body.strip().splitlines() if line.strip()]


def latex_columns(text: str) -> int:
    """The number of columns the tabular declares."""
    spec = re.search(r"\\begin\{tabular\}\{([^}]*)\}", text)
    assert spec, "no tabular environment"
    return len(re.findall(r"[lcrp]", spec.group(1)))


def unescaped_ampersands(row: str) -> int:
    """Column separators in a LaTeX row (``\\&`` is a literal ampersand)."""
    return len(re.findall(r"(?<!\\)&", row))
