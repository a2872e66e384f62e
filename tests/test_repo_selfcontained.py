"""The repository stands alone: no pointer to design notes outside it, a licence that matches pyproject, and an
architecture document that covers every invariant the code and tests name."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Spelled in pieces so this file does not match its own search.
OUTSIDE = ("DESIGN" + ".md", "../" + "shared", "/work/" + "shared")


def tracked_text_files() -> list[Path]:
    """Every tracked file that reads as UTF-8 text."""
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    out = []
    for name in names:
        path = REPO / name
        try:
            path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        out.append(path)
    return out


def test_nothing_points_outside_the_repository() -> None:
    offenders = [f"{p.relative_to(REPO)}: {needle}" for p in tracked_text_files()
                 for needle in OUTSIDE if needle in p.read_text(encoding="utf-8")]
    assert offenders == []


def test_licence_file_matches_pyproject() -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["license"] == {"text": "Apache-2.0"}
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_architecture_doc_covers_every_invariant_and_names_real_modules() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text()
    for n in range(1, 10):
        assert re.search(rf"^\| I{n} \| \*\*", doc, re.MULTILINE), f"I{n} missing from the invariants table"
    for module in set(re.findall(r"`((?:engine|storage|domain|api|protocol)/[a-z_]+\.py)", doc)):
        root = REPO if module.startswith("protocol/") else REPO / "sync_server"
        assert (root / module).is_file(), module
    readme = (REPO / "README.md").read_text()
    assert "docs/architecture.md" in readme and (REPO / "CHANGELOG.md").is_file()
