"""Cross-references in the documentation hold: every relative link of README.md and docs/*.md names a file
that exists and, with ``#anchor``, a heading of that file (GitHub's anchor rules); and no page or
docstring speaks of the project's issue numbers (the docs describe the software, not its history)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown page: lower case, punctuation dropped (hyphens and
    underscores kept), spaces to hyphens, ``-1``, ``-2`` ... for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        text = re.sub(r"`([^`]*)`", r"\1", match.group(1))
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text()))


def test_the_anchor_rules_match_githubs():
    page = ROOT / "docs" / "camera.md"
    assert "large-images-the-fast-dds-profile" in anchors(page)
    assert "pebal_camera" in anchors(page)  # `pebal_camera` -> pebal_camera (underscore kept)
    assert "without-ros-pebal-predict" in anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_points_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_no_page_or_docstring_speaks_of_issue_numbers():
    pattern = re.compile(r"\bissues?\s*\d+|\bissue's\b|\(issue\b", re.I)
    files = [*PAGES, *sorted(ROOT.glob("pebal_*/**/*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    files += [*sorted((ROOT / "launch").glob("*.py")), *sorted((ROOT / "config").glob("*"))]
    files += [ROOT / name for name in ("Makefile", "package.xml", "requirements.txt", "requirements-ros.txt")]
    found = [f"{f.relative_to(ROOT)}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
             if pattern.search(line)]  # fmt: skip
    assert not found, "describe the software, not its history: " + ", ".join(found)
