"""mqprobe's wings stand on one another in one order (see mqprobe/__init__.py): a module
imports from its own wing or from one below it, never from one above."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mqprobe import WINGS

from .conftest import REPO

pytestmark = pytest.mark.unit


def wing_of(module: str) -> str:
    """The wing a dotted module name belongs to ('' for the ground floor)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in WINGS else (
        parts[1] if len(parts) == 2 and parts[1] in ("cli", "__main__") else "")


def upward_imports(package: Path) -> list[str]:
    """Each import in `package` that reaches a wing above the importing module's own."""
    rank = {wing: i for i, wing in enumerate(WINGS)}
    found = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mine = wing_of(module + (".x" if parts[-1] == "__init__" else ""))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mqprobe"):
                theirs = wing_of(node.module if node.module.count(".") >= 2 or node.module.endswith(
                    (".cli", ".__main__")) else node.module + ".x")
                if rank[theirs] > rank[mine]:
                    found.append(f"{module} ({mine or 'ground'}) imports {node.module} ({theirs})")
    return found


def test_no_module_imports_from_a_wing_above_its_own():
    assert upward_imports(REPO / "mqprobe") == []


def test_an_import_from_above_is_found(tmp_path):
    package = tmp_path / "mqprobe"
    (package / "broker").mkdir(parents=True)
    (package / "model.py").write_text("from mqprobe.verdict.analysis import judge\n")
    (package / "broker" / "managed.py").write_text("from mqprobe.model import HOPS\n")
    assert upward_imports(package) == [
        "mqprobe.model (ground) imports mqprobe.verdict.analysis (verdict)"]


def test_every_wing_is_a_package_and_every_package_a_wing():
    packages = {p.parent.name for p in (REPO / "mqprobe").glob("*/__init__.py")}
    assert packages == set(WINGS) - {"", "cli", "__main__"}
