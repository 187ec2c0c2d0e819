"""mqprobe's wings stand on one another in one order (see mqprobe/__init__.py): a module
imports from its own wing or from one below it, never from one above."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mqprobe import WINGS

from .conftest import REPO


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


@pytest.mark.integration
def test_what_a_server_imports_brings_no_command_line_and_no_measuring_wing():
    """A user's server imports mqprobe.embed: none of typer, rich, matplotlib, the AMQP or
    socket.io clients, or the wings above it come with it (a fresh interpreter: a process)."""
    import subprocess
    import sys

    heavy = ("rich", "typer", "matplotlib", "aio_pika", "pika", "socketio")
    above = tuple(f"mqprobe.{wing}" for wing in WINGS[WINGS.index("embed") + 1:] if wing)
    code = ("import sys, mqprobe.embed; print('\\n'.join(m for m in sys.modules if "
            f"m.split('.')[0] in {heavy!r} or m.startswith({above!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


OUTSIDE = ("../" + "shared", "design" + ".md")  # spelled apart, or this file would name them


def paths_outside(root: Path) -> list[str]:
    """Each line of the repository's text (docs, code, tests, examples) that names a path
    outside the repository: a user's clone has nothing beside it."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] in (".git", ".venv", "runs") or ".egg-info" in rel.parts[0] or (
                not path.is_file() or path.suffix not in (".md", ".py", ".sh", ".toml", ".js", "")):
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if any(name in line for name in OUTSIDE):
                found.append(f"{rel}:{number}: {line.strip()}")
    return found


def test_nothing_in_the_repository_points_outside_it(tmp_path):
    assert paths_outside(REPO) == []
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text(f"see {OUTSIDE[0]}/seed/README.md\n")
    assert paths_outside(tmp_path) == [f"docs/x.md:1: see {OUTSIDE[0]}/seed/README.md"]
