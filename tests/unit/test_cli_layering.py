"""The clients stay clients: the operator CLI and the agent import no service, the CLI's command
modules form no import loop, and only the launchers (`launch/`) compose services."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level) for every import in the file, lazy ones inside functions included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, id(node) in top))
    return found


def _package(name: str) -> list[Path]:
    return sorted((ROOT / name).rglob("*.py"))


@pytest.mark.parametrize("package", ["strongroom", "agent"])
def test_clients_import_no_service(package):
    for path in _package(package):
        bad = [m for m, _ in _imports(path) if m.split(".")[0] == "services"]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_only_the_cli_entry_point_names_the_launchers_and_only_lazily():
    for path in _package("strongroom") + _package("agent"):
        named = [(m, top) for m, top in _imports(path) if m.split(".")[0] == "launch"]
        if path == ROOT / "strongroom" / "cli.py":
            assert named and not any(top for _, top in named), "strongroom dev/serve import the launchers lazily"
        else:
            assert not named, f"{path.relative_to(ROOT)} imports {named}"


def test_command_modules_never_import_the_entry_point():
    for path in _package("strongroom"):
        if path.name != "cli.py":
            assert "strongroom.cli" not in {m for m, _ in _imports(path)}, f"{path.name} imports strongroom.cli"


def test_the_verification_modules_in_shared_import_no_service():
    for name in ("audit_chain", "audit_archive", "certificates", "signatures"):
        bad = [m for m, _ in _imports(ROOT / "shared" / f"{name}.py") if m.split(".")[0] in ("services", "strongroom")]
        assert not bad, f"shared/{name}.py imports {bad}"


def test_loading_the_clients_loads_no_service():
    code = ("import sys, strongroom.cli, agent.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('services', 'launch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
