"""The READMEs: every linked file and section exists, and the frontier shown is the one measured."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "benchmarks/README.md"]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces as ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)  # (no code blocks)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_slug_is_githubs():
    assert _slug("Speed (AMD EPYC, 2 threads, CPU; `benchmarks/results/{speedup,overhead}.md`)") == \
        "speed-amd-epyc-2-threads-cpu-benchmarksresultsspeedupoverheadmd"
    assert _slug("Accuracy at equal size: the frontier") == "accuracy-at-equal-size-the-frontier"


@pytest.mark.parametrize("doc", DOCS)
def test_every_section_link_resolves(doc: str):
    path = ROOT / doc
    broken = []
    for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", path.read_text(encoding="utf-8")):
        linked = (path.parent / target).resolve() if target else path
        if target.startswith("http") or linked.suffix != ".md":
            continue
        if not linked.exists() or anchor not in _anchors(linked):
            broken.append(f"{target}#{anchor}")
    assert not broken, f"{doc} links to sections that do not exist: {broken}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_linked_file_exists(doc: str):
    path = ROOT / doc
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)", path.read_text(encoding="utf-8"))
    missing = sorted({t for t in targets if "://" not in t and not (path.parent / t).exists()})
    assert not missing, f"{doc} links to files that do not exist: {missing}"


def test_the_readme_shows_the_measured_frontier():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- frontier:start -->", "<!-- frontier:end -->"
    assert start in readme and end in readme, "README.md lost its frontier block"
    shown = readme[readme.index(start) + len(start):readme.index(end)].strip()
    measured = (ROOT / "benchmarks/results/frontier.md").read_text(encoding="utf-8")
    measured = re.sub(r"^## (.*)$", r"**\1**", measured[measured.index("\n## "):], flags=re.M).strip()
    assert shown == measured, "README.md's frontier block differs from benchmarks/results/frontier.md"
