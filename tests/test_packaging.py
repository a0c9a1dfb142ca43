"""What the wheel ships, read from ``pyproject.toml`` against the source tree: every package folder
is listed, the bundled model is package data found through ``importlib.resources``, nothing named
``assets`` is installed, and ``requires-python`` admits the Pythons the dependencies support.
``.ci/smoke_wheel.sh`` builds and installs the real wheel; these fail before it would."""

from __future__ import annotations

import sys
import tomllib
from importlib import resources
from pathlib import Path

from packaging.specifiers import SpecifierSet

from mjx_biomech.body.loading import bundled_model_path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
SHIPPED = set(SETUPTOOLS["packages"])
TOP_LEVEL = {name.split(".")[0] for name in SHIPPED}


def package_folders(top: str) -> set[str]:
    """Dotted names of ``top`` and every folder under it holding any file (``__pycache__`` aside)."""
    folders = set()
    for path in (ROOT / top).rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            folders.add(".".join(path.parent.relative_to(ROOT).parts))
    return folders


def test_every_folder_of_the_shipped_packages_is_listed():
    in_tree = set().union(*(package_folders(top) for top in TOP_LEVEL))
    assert in_tree == SHIPPED, f"pyproject lacks {sorted(in_tree - SHIPPED)}; lists missing {sorted(SHIPPED - in_tree)}"


def test_nothing_named_assets_is_installed():
    assert "assets" not in TOP_LEVEL
    assert all(not name.startswith("assets") for name in SETUPTOOLS.get("package-data", {}))


def test_every_file_of_the_data_folder_is_package_data():
    patterns = [f"{package.replace('.', '/')}/{glob}" for package, globs in SETUPTOOLS["package-data"].items() for glob in globs]
    shipped = {p for pattern in patterns for p in ROOT.glob(pattern)}
    files = [p for p in (ROOT / "mjx_biomech" / "data").rglob("*") if p.is_file()]
    assert files
    unmatched = [p.relative_to(ROOT).as_posix() for p in files if p not in shipped]
    assert not unmatched, f"files the wheel would leave out (package-data {patterns}): {unmatched}"


def test_bundled_model_is_the_package_resource():
    resource = resources.files("mjx_biomech.data") / "fullbody.xml"
    assert resource.is_file()
    assert bundled_model_path().resolve() == Path(str(resource)).resolve()
    assert (ROOT / "mjx_biomech" / "data") in bundled_model_path().resolve().parents


def test_requires_python_admits_3_11_to_3_13_and_this_interpreter():
    spec = SpecifierSet(PYPROJECT["project"]["requires-python"])
    running = ".".join(map(str, sys.version_info[:3]))
    for version in ("3.11.0", "3.12.0", "3.13.0", running):
        assert spec.contains(version), f"requires-python {spec} refuses {version}"
    assert not spec.contains("3.10.12"), "jax 0.9.2 publishes no wheel for 3.10"


def test_the_osim_loader_and_the_command_are_declared():
    assert PYPROJECT["project"]["scripts"]["mjx-biomech"] == "mjx_biomech.cli:main"
    loaders = PYPROJECT["project"]["entry-points"]["mjx_biomech.model_loaders"]
    module = loaders["osim"].split(":")[0]
    assert module.rsplit(".", 1)[0] in SHIPPED
