"""Every headless module imports without Textual and without doing any IO.

Each package's modules are imported, one by one, in a fresh interpreter (harlequin's way) whose
sockets, file opens for writing and subprocesses are refused; after each import `sys.modules` is
checked for Textual. A module that connects to Redis, opens a database or writes a file at
import, or pulls in Textual, fails here by name. (One interpreter per package, not per module,
keeps this to a few seconds.)
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import barfinex_cli

HEADLESS = ("contracts", "bus", "store", "market", "runtime", "kernel", "provider", "detector")

PROBE = r"""
import builtins, io, os, socket, subprocess, sys
def refuse(what):
    def guard(*args, **kwargs):
        raise AssertionError(f"{what} at import: {args[:2]!r}")
    return guard
socket.socket.connect = refuse("socket connect")
socket.socket.bind = refuse("socket bind")
subprocess.Popen.__init__ = refuse("subprocess")
real_open = builtins.open
def guarded_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+"):
        raise AssertionError(f"file write at import: {file!r}")
    return real_open(file, mode, *args, **kwargs)
builtins.open = guarded_open
io.open = guarded_open
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
    if "textual" in sys.modules:
        print(f"textual imported by {name}")
        break
else:
    print("clean")
"""


def _modules(package: str) -> list[str]:
    """Return the package and every module below it, found on disk (nothing imported)."""
    root = f"barfinex_cli.{package}"
    path = [str(p) for p in barfinex_cli.__path__]
    found = [root]
    for info in pkgutil.walk_packages([f"{path[0]}/{package}"], prefix=f"{root}."):
        found.append(info.name)
    return found


def test_the_probe_refuses_io_at_import() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "socketserver", "http.server", "sqlite3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "clean"
    writes = "import builtins; builtins.open('/tmp/bfx-headless-probe', 'w')"
    result = subprocess.run(
        [sys.executable, "-c", PROBE.replace("import importlib\n", writes + "\n", 1), "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and "file write at import" in result.stderr


@pytest.mark.parametrize("package", HEADLESS)
def test_a_headless_package_imports_with_no_textual_and_no_io(package: str) -> None:
    modules = _modules(package)
    assert len(modules) >= 2 or package == "kernel"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "clean"
