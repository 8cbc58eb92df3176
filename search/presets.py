"""The shipped presets: found by name, or by the path the README uses, without a checkout.

The YAML files live in the repository's ``configs/`` folder, installed as the package
``wen_presets`` (a wheel carries them; an editable install maps the package to the folder),
so ``importlib.resources`` finds them wherever the project is installed.

>>> preset_path("smoke").name
'smoke.yaml'
>>> "mondal2021" in preset_names()
True
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["config_path", "preset_names", "preset_path"]

_PACKAGE = "wen_presets"


def _preset_dir() -> Path:
    return Path(str(resources.files(_PACKAGE)))


def preset_names() -> list[str]:
    """Names of the shipped presets (``demo``, ``smoke``, one per study)."""
    return sorted(p.stem for p in _preset_dir().glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The file of the shipped preset ``name``; a ``FileNotFoundError`` lists the names."""
    path = _preset_dir() / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"no shipped preset named {name!r}; presets: {', '.join(preset_names())}"
        )
    return path


def config_path(arg: str | Path) -> tuple[Path, str | None]:
    """The config file a command line names, and a note when it is a shipped preset.

    An existing file wins. Otherwise a bare preset name (``mondal2021``) or the README's
    ``configs/NAME.yaml`` names the shipped preset, so the documented commands work from any
    folder of an installed project. Anything else is returned unchanged (the loader then
    says the file does not exist).
    """
    path = Path(arg).expanduser()
    if path.is_file():
        return path, None
    text = str(arg)
    name = None
    if "/" not in text and not text.endswith((".yaml", ".yml")):
        name = text
    elif path.parent.name == "configs" and path.suffix in (".yaml", ".yml"):
        name = path.stem
    if name is not None and name in preset_names():
        found = preset_path(name)
        return found, f"using the shipped preset {name} ({found})"
    return path, None
