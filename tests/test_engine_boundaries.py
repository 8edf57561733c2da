"""Issue 15, acceptance 1: the engine (harness/) reaches plugins only through the plugin loader."""
from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "harness"
PLUGIN_PACKAGES = ("backbones", "tasks")


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """Every module a file imports (absolute names; ``from .x`` relative to harness), with the line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = ".".join(("harness", *path.relative_to(HARNESS).parent.parts))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.append((module, node.lineno))
            out += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                out.append((arg.value, node.lineno))
    return out


def test_only_the_plugin_loader_imports_backbones_or_tasks():
    offenders = []
    for path in sorted(HARNESS.rglob("*.py")):
        if path.name == "plugins.py" and path.parent == HARNESS:
            continue
        for module, line in imported_modules(path):
            if module.split(".")[0] in PLUGIN_PACKAGES:
                offenders.append(f"{path.relative_to(HARNESS.parent)}:{line} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_grid_does_not_import_the_cli():
    modules = [m for m, _ in imported_modules(HARNESS / "grid.py")]
    assert not [m for m in modules if m == "harness.cli" or m.startswith("harness.cli.")], modules


def test_the_checker_sees_the_imports_it_must_catch(tmp_path):
    """The scanner itself: relative, absolute and importlib imports of a plugin are all found."""
    fake = HARNESS / "_boundary_probe_tmp.py"
    fake.write_text("import tasks.suites\nfrom backbones import timm_backbones\nfrom . import cli\nimport importlib\nimportlib.import_module('tasks.icl')\n")
    try:
        found = {m for m, _ in imported_modules(fake)}
    finally:
        fake.unlink()
    assert {"tasks.suites", "backbones", "harness.cli", "tasks.icl"} <= found
