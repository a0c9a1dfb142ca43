"""Dependencies point one way (DESIGN.md, "Layout"): ``converters`` and ``env_registry`` build on
``mjx_biomech``, never the reverse; only ``mjx_biomech/cli/`` joins the packages. Checked on the
source by an AST walk, so an import inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mjx_biomech", "converters", "env_registry", "assets")
# package -> the packages none of its modules may import (mjx_biomech/cli/ is exempt, see below).
FORBIDDEN = {
    "mjx_biomech": {"converters", "env_registry", "assets"},
    "converters": {"env_registry", "assets"},
    "env_registry": {"assets"},
    "assets": {"converters", "env_registry"},
}
# The command line is the one place that joins the packages, lazily.
JOINING = "mjx_biomech.cli"


@dataclass(frozen=True)
class Import:
    """One imported module (absolute dotted name) and, for ``from m import n``, the name ``n``."""

    line: int
    module: str
    name: str | None = None


def module_name(path: Path, root: Path = ROOT) -> str:
    """``a/b/c.py`` -> ``a.b.c``; ``a/b/__init__.py`` -> ``a.b``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative import ``from {'.' * level}{target} import ...`` in ``module``."""
    base = module.split(".")
    # In a package's __init__, "." is the package itself; in a module, its parent.
    base = base if is_package else base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports(source: str, module: str, is_package: bool) -> list[Import]:
    """Every import in ``source`` (at any depth: functions, methods, ``if`` blocks), relative ones
    resolved against ``module``, and literal ``importlib.import_module("...")`` calls."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [Import(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node.level, node.module) if node.level else node.module
            for alias in node.names:
                # "from pkg import sub" may name a module: count it as importing pkg.sub too.
                out.append(Import(node.lineno, target, alias.name))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and _called_name(node.func) == "import_module"):
            out.append(Import(node.lineno, node.args[0].value))
    return out


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def private_uses(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted name) of private names (``_x``, not dunders) that ``module`` takes from a module
    of another top-level package: ``from other.m import _x``, ``import other._m``, or ``m._x``
    where ``m`` is bound by an import from another package."""
    own = module.split(".")[0]
    tree = ast.parse(source)
    found, bound = [], {}

    def private(part: str) -> bool:
        return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == own:
                    continue
                if any(private(p) for p in alias.name.split(".")):
                    found.append((node.lineno, alias.name))
                bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node.level, node.module) if node.level else node.module
            if target.split(".")[0] == own:
                continue
            for alias in node.names:
                dotted = f"{target}.{alias.name}"
                if any(private(p) for p in dotted.split(".")):
                    found.append((node.lineno, dotted))
                bound[alias.asname or alias.name] = dotted
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            # Walk down a chain a.b._c to its root name.
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in bound:
                found.append((node.lineno, ".".join([bound[value.id], *reversed(chain)])))
    return found


def python_files(package: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / package).rglob("*.py") if ".venv" not in p.parts)


def layout_violations(root: Path = ROOT) -> list[str]:
    """Every import that breaks the one-way rule, as ``file:line: what``, sorted."""
    problems = set()
    for package, forbidden in FORBIDDEN.items():
        for path in python_files(package, root):
            module = module_name(path, root)
            if module == JOINING or module.startswith(JOINING + "."):
                continue
            found = imports(path.read_text(), module, path.name == "__init__.py")
            for imp in found:
                names = [imp.module] + ([f"{imp.module}.{imp.name}"] if imp.name else [])
                top = {n.split(".")[0] for n in names if n}
                for bad in sorted(top & forbidden):
                    problems.add(f"{path.relative_to(root)}:{imp.line}: {package} imports {bad} ({imp.module})")
    return sorted(problems)


def private_violations(root: Path = ROOT) -> list[str]:
    """Every private name a package takes from another package, as ``file:line: name``."""
    problems = []
    for package in PACKAGES:
        for path in python_files(package, root):
            module = module_name(path, root)
            for line, name in private_uses(path.read_text(), module, path.name == "__init__.py"):
                if name.split(".")[0] in PACKAGES:
                    problems.append(f"{path.relative_to(root)}:{line}: {name}")
    return problems


def test_every_package_has_modules_to_check():
    for package in PACKAGES:
        assert python_files(package), package
    assert any(p.parent.name == "cli" for p in python_files("mjx_biomech"))


def test_the_core_imports_neither_converters_nor_env_registry_nor_assets():
    assert layout_violations() == []


def test_no_package_uses_another_packages_private_names():
    assert private_violations() == []


# ----------------------------------------------------------------- the check itself


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return tmp_path


@pytest.mark.parametrize(
    "name, text",
    [
        ("mjx_biomech/analysis/out.py", "from converters import mot\n"),
        ("mjx_biomech/analysis/out.py", "def save():\n    import converters.mot as mot\n"),
        ("mjx_biomech/body/x.py", "class A:\n    def f(self):\n        from env_registry.body import Body\n"),
        ("mjx_biomech/body/x.py", "import importlib\nm = importlib.import_module('assets.build_model')\n"),
        ("mjx_biomech/__init__.py", "if True:\n    import assets\n"),
        ("converters/x.py", "from env_registry import reference\n"),
        ("env_registry/x.py", "import assets\n"),
    ],
)
def test_a_forbidden_import_anywhere_in_a_module_is_found(tmp_path, name, text):
    root = tree(tmp_path, {name: text})
    assert [v.split(":")[0] for v in layout_violations(root)] == [name]


def test_relative_imports_are_resolved_and_cli_may_join_lazily(tmp_path):
    root = tree(tmp_path, {
        "mjx_biomech/cli/fit.py": "def run():\n    from converters import fit_output\n",
        "mjx_biomech/body/x.py": "from . import y\nfrom ..analysis import metrics\n",
        "converters/x.py": "from mjx_biomech.body import model\n",
        "env_registry/x.py": "from converters import mot\nfrom .body import Body\n",
    })
    assert layout_violations(root) == []
    assert imports("from ..analysis import metrics\n", "mjx_biomech.body.x", False) == [
        Import(1, "mjx_biomech.analysis", "metrics")]
    assert imports("from . import y\n", "mjx_biomech.body", True) == [Import(1, "mjx_biomech.body", "y")]


@pytest.mark.parametrize(
    "text, name",
    [
        ("from mjx_biomech.body.metadata import _read\n", "mjx_biomech.body.metadata._read"),
        ("from mjx_biomech.body import _private\n", "mjx_biomech.body._private"),
        ("import mjx_biomech._impl as impl\n", "mjx_biomech._impl"),
        ("import mjx_biomech.model\nmjx_biomech.model._read_metadata_from_model(m)\n",
         "mjx_biomech.model._read_metadata_from_model"),
        ("from mjx_biomech.body import model as m\nm._x\n", "mjx_biomech.body.model._x"),
    ],
)
def test_a_private_name_of_another_package_is_found(tmp_path, text, name):
    root = tree(tmp_path, {"env_registry/x.py": text})
    assert [v.split(": ", 1)[1] for v in private_violations(root)] == [name]


def test_own_private_names_and_dunders_are_allowed(tmp_path):
    root = tree(tmp_path, {"env_registry/x.py": "from .body import _helper\nimport mjx_biomech\nmjx_biomech.__version__\n"})
    assert private_violations(root) == []
