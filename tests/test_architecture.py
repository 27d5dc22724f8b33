"""The package's shape: layers that import only downward, modules of a readable size, and
modules that start nothing when imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "planher"
MODULE_MAX_LINES = 800


def test_the_import_contracts_hold():
    """pyproject.toml's contracts: layers import only downward, the domain is pure, and
    endpoint groups never import each other."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    checked = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 broken" in checked.stdout


def test_no_module_is_over_800_lines():
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {path: lines for path, lines in sizes.items() if lines > MODULE_MAX_LINES} == {}


def test_importing_every_module_reads_no_settings_and_creates_no_app():
    """Settings that could not be parsed do not matter until the app is asked for."""
    importing = (
        "import importlib, pkgutil, threading, planher\n"
        "threads = threading.active_count()\n"
        "for module in pkgutil.walk_packages(planher.__path__, 'planher.'):\n"
        "    if module.name != 'planher.__main__':\n"
        "        importlib.import_module(module.name)\n"
        "assert 'app' not in vars(planher), 'an app was created'\n"
        "assert threading.active_count() == threads, 'a thread was started'\n"
        "print('imported')\n"
    )
    unusable = {"DATABASE_URL": "nosuchdb://", "BCRYPT_ROUNDS": "many", "SECRET_KEYS": ""}
    imported = subprocess.run(
        [sys.executable, "-c", importing],
        cwd=ROOT,
        env={**os.environ, **unusable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "imported"
    asked = subprocess.run(
        [sys.executable, "-c", "import planher; planher.app"],
        cwd=ROOT,
        env={**os.environ, **unusable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert asked.returncode != 0, "the unusable settings are read once the app is asked for"
