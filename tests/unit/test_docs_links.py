"""The project's own docs exist where the code, the README and each other point, and every
relative link in them resolves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
DOC_PATH = re.compile(r"\bdocs/[a-z0-9_-]+\.md\b")


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                          *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in out.stdout.splitlines() if (ROOT / line).is_file()]


def test_every_docs_page_named_anywhere_exists() -> None:
    named: dict[str, set[str]] = {}
    for path in tracked("*.py", "*.md", "*.yml", "*.sh", "Makefile"):
        if path.is_relative_to(ROOT / "tests" / "harness"):
            continue  # the harness READMEs cite their own design notes
        for ref in DOC_PATH.findall(path.read_text(errors="replace")):
            named.setdefault(ref, set()).add(str(path.relative_to(ROOT)))
    assert "docs/homewizard-api.md" in named
    missing = {ref: sorted(where) for ref, where in named.items() if not (ROOT / ref).is_file()}
    assert missing == {}


def test_relative_links_in_the_docs_resolve() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "roles").glob("*/README.md"))]
    assert len(pages) >= 5
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
