"""The contract is in the repository: every "SPEC §N" and "SPEC-server §N" cited in the code, the
tests, the benchmarks and the docs names a section that docs/ has (docs/spec.md holds §1 to §6,
docs/server.md §7 to §9), and README.md links docs/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = {"SPEC": DOCS / "spec.md", "SPEC-server": DOCS / "server.md"}
SOURCES = ("adminchain", "ledger", "projections", "replay", "tests", "benchmarks")

# "SPEC §2.1", "SPEC-server §7.3", "SPEC §1, §4", "SPEC §2.1 and §2.6", "SPEC §2.1-§2.6"
_CITATION = re.compile(
    r"\b(SPEC(?:-server)?) ?(§ ?\d+(?:\.\d+)*(?:(?:, ?| and |\u2013|-)§ ?\d+(?:\.\d+)*)*)"
)
_SECTION = re.compile(r"§ ?(\d+(?:\.\d+)*)")
_HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", re.MULTILINE)


def citations(text: str) -> list[tuple[str, str]]:
    """(document, section) for every citation in `text`."""
    return [
        (match.group(1), section)
        for match in _CITATION.finditer(text)
        for section in _SECTION.findall(match.group(2))
    ]


def sections(page: Path) -> set[str]:
    """The numbered sections of a docs page ("1", "2.1", …), from its headings."""
    return set(_HEADING.findall(page.read_text(encoding="utf-8")))


def cited_files() -> list[Path]:
    files = [p for top in SOURCES for p in sorted((ROOT / top).rglob("*.py"))]
    files += sorted(DOCS.glob("*.md"))
    files += [ROOT / "README.md", *sorted((ROOT / "benchmarks").glob("*.md"))]
    return [f for f in files if f.is_file() and f.resolve() != Path(__file__).resolve()]


def missing_citations() -> list[str]:
    known = {doc: sections(page) for doc, page in PAGES.items()}
    problems = []
    for path in cited_files():
        for doc, section in citations(path.read_text(encoding="utf-8")):
            if section not in known[doc]:
                problems.append(f"{path.relative_to(ROOT)}: {doc} §{section}")
    return problems


def test_every_cited_section_exists_in_docs() -> None:
    assert missing_citations() == []


def test_the_code_does_cite_the_docs() -> None:
    cited = {c for path in cited_files() for c in citations(path.read_text(encoding="utf-8"))}
    assert ("SPEC", "2.1") in cited
    assert ("SPEC", "5") in cited


def test_spec_pages_number_every_section() -> None:
    assert {"1", "2", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "3", "4", "5", "6"} <= sections(
        PAGES["SPEC"]
    )
    assert {"7", "7.1", "7.2", "7.3", "7.4", "8", "9"} <= sections(PAGES["SPEC-server"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see SPEC §2.1 here", [("SPEC", "2.1")]),
        ("(SPEC §1, §4)", [("SPEC", "1"), ("SPEC", "4")]),
        ("SPEC-server §7.3", [("SPEC-server", "7.3")]),
        ("RFC 9162 §2.1.3.2", []),
    ],
)
def test_citations_are_parsed(text: str, expected: list[tuple[str, str]]) -> None:
    assert citations(text) == expected


def test_a_section_that_does_not_exist_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text("## 1. One\n### 1.2 Two\n", encoding="utf-8")
    assert sections(page) == {"1", "1.2"}
    assert ("SPEC", "99") in citations("SPEC §99")


def test_readme_links_the_docs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in ("docs/README.md", "docs/spec.md", "docs/server.md", "docs/architecture.md"):
        assert f"({page})" in readme, page
