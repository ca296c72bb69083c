"""Check the import floors (pyproject.toml [tool.importlinter]) with import-linter's `lint-imports`.

import-linter reads a package from one directory, but ours maps folders of the repository into one namespace
(pyproject's package-dir: services/ is dwcp_inference.services, ...). So this lays the namespace out as a tree of
symlinks, one per source file, under a scratch directory, and runs lint-imports there.

    python scripts/lint_imports.py [--keep DIR]    # exit status: lint-imports'
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def layout(dest: Path, root: Path = ROOT) -> Path:
    """The dwcp_inference namespace as symlinks under dest (every .py file of each mapped folder)."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    for package, folder in config["tool"]["setuptools"]["package-dir"].items():
        source = root / folder
        target = dest.joinpath(*package.split("."))
        for path in source.rglob("*.py"):
            relative = path.relative_to(source)
            if "__pycache__" in relative.parts or any(p.startswith(".") for p in relative.parts):
                continue
            link = target / relative
            if link.exists() or link.is_symlink():
                continue  # a folder mapped inside another (none today): the inner mapping wins
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return dest


def run(dest: Path, root: Path = ROOT) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(dest)}
    return subprocess.run([str(lint), str(root / "pyproject.toml"), "--no-cache"], cwd=dest, env=env,
                          capture_output=True, text=True, timeout=600)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="lay the tree out here (and keep it) instead of a scratch directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dwcp-lint-imports-") as scratch:
        dest = args.keep or Path(scratch)
        result = run(layout(dest))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
