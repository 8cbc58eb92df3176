"""The package works installed, not only from its checkout: the presets ship as package data,
and a wheel installed into a fresh virtual environment runs ``wen demo`` and a preset's smoke
search from an unrelated folder."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from search.presets import config_path, preset_names, preset_path

REPO = Path(__file__).resolve().parents[1]


def test_the_package_list_names_every_package() -> None:
    from setuptools import find_packages

    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    found = find_packages(str(REPO), include=["trainers*", "search*", "ensemble*", "reports*"])
    assert sorted(set(listed) - {"wen_presets"}) == sorted(found)


def test_presets_are_found_by_name_and_by_the_readme_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {"demo", "smoke", "mondal2021", "fata2023", "jawahar2022", "alim2024"} <= set(
        preset_names()
    )
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    for arg in ("mondal2021", "configs/mondal2021.yaml"):
        path, note = config_path(arg)
        assert path == preset_path("mondal2021") and "shipped preset mondal2021" in (note or "")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mondal2021.yaml").write_text("name: mine\n")
    assert config_path("configs/mondal2021.yaml") == (
        Path("configs/mondal2021.yaml"),
        None,
    )  # the user's own wins
    assert config_path("other.yaml") == (Path("other.yaml"), None)
    with pytest.raises(FileNotFoundError, match="presets: alim2024"):
        preset_path("nope")


def _fresh_venv_with_the_wheel(tmp_path: Path) -> Path:
    """A new virtual environment holding the project's wheel; its dependencies come from this
    environment's site-packages (a .pth line), so nothing is downloaded."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(REPO)], check=True, timeout=300)  # fmt: skip
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())  # fmt: skip
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    [wheel] = wheels.glob("wen_search-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                    "--no-deps", "-q", str(wheel)], check=True, timeout=300)  # fmt: skip
    return venv


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_installed_wheel_runs_the_demo_and_a_smoke_search_from_any_folder(
    tmp_path: Path, wen_env
) -> None:
    venv = _fresh_venv_with_the_wheel(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**wen_env, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import search, wen_presets; print(search.__file__, wen_presets.__file__)"],
                           cwd=work, env=env, check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert str(venv) in where and str(REPO) not in where, (
        where
    )  # the wheel's copy, not the checkout
    wen = str(venv / "bin" / "wen")
    smoke = subprocess.run([wen, "search", "mondal2021", "--smoke", "--storage", "runs"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert smoke.returncode == 0, (smoke.stdout + smoke.stderr)[-4000:]
    assert (
        "shipped preset mondal2021" in smoke.stdout
        and (work / "runs" / "mondal2021-smoke" / "results.csv").is_file()
    )
    demo = subprocess.run([wen, "demo", "--out", "D", "--no-gradcam"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=800)  # fmt: skip
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-4000:]
    assert (work / "D" / "run" / "model" / "ensemble.onnx").is_file()
    assert (work / "D" / "run" / "report" / "report.html").is_file()
