"""Every figure the README and docs quote next to a results file is in that file.

A figure "cites" a file when its table row, or its paragraph, names a path under
``benchmarks/results/`` (a paragraph's citations also cover the table right after it, row by
row, unless a row cites its own; code blocks are left out). Every decimal number in such a unit, outside backticks and bounds (``>= 0.8x``),
must equal a number of a cited file at the precision the text shows (or that number x100, for
percentages). The files are written by the scripts in benchmarks/ (results_file.py), so a
figure edited by hand, or a result re-measured without updating the text, fails here. A speed
(img/s, samples/s, ms/step, ...) quoted outside backticks must cite a results file: saying that
it has none ("no results file") is no longer accepted (issue 24 item 11); re-measure it or drop
the figure.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CITATION = re.compile(r"benchmarks/results/[\w.*/-]*[\w*/]")
DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+(?:e-?\d+)?(?![\d.]*\d)")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def all_units(text: str) -> list[tuple[str, list[str]]]:
    """(text of a unit, the results paths it cites) for every paragraph and table row, citing or not:
    a table row has the citations of its own row or, failing that, of the paragraph just before the
    table. A list item is a paragraph."""
    text = re.sub(r"```.*?```\n?", "", text, flags=re.S)  # commands: their paths are outputs, not citations
    found, blocks = [], re.split(r"\n\s*\n|\n(?=[*-] )", text)  # paragraphs, and list items each on its own
    previous_citations: list[str] = []
    for block in blocks:
        lines = block.strip().splitlines()
        if lines and all(line.lstrip().startswith("|") for line in lines):
            for row in lines:
                found.append((row, CITATION.findall(row) or previous_citations))
            previous_citations = []
        else:
            previous_citations = CITATION.findall(block)
            found.append((block, previous_citations))
    return found


def units(text: str) -> list[tuple[str, list[str]]]:
    """The units of ``all_units`` that cite a results file."""
    return [(unit, cited) for unit, cited in all_units(text) if cited]


def cited_files(citation: str) -> list[Path]:
    """The files a citation names: a file (with its .json / .md twin), a folder (all its files) or a glob."""
    target = REPO / citation.rstrip("/")
    if "*" in citation:
        return sorted(REPO.glob(citation))
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.is_file() and p.suffix in (".md", ".json", ".csv", ".txt", ".yaml", ".log"))
    twins = [target.with_suffix(suffix) for suffix in (".json", ".md")] if target.suffix in (".json", ".md") else []
    return sorted({p for p in [target, *twins] if p.is_file()}) if target.is_file() else []


def figures(unit: str) -> list[str]:
    """Decimal numbers of a unit's text, leaving out code (backticks) and the citations themselves."""
    text = re.sub(r"`[^`]*`", " ", unit)
    text = CITATION.sub(" ", text)
    text = re.sub(r"(>=|<=|≥|≤)\s*-?\d+(\.\d+)?", " ", text)  # targets and limits are not measurements
    return DECIMAL.findall(text)


def matches(figure: str, numbers: list[float]) -> bool:
    """``figure`` as printed (``0.581``, ``58.1``, ``1.5e-4``) equals one of ``numbers`` at its precision."""
    value = float(figure)
    if "e" in figure.lower():
        return any(abs(n - value) <= abs(value) * 0.05 for n in numbers)
    decimals = len(figure.split(".")[1])
    tolerance = 0.5 * 10 ** -decimals + 1e-12
    return any(abs(n - value) <= tolerance or abs(100 * n - value) <= tolerance for n in numbers)


def all_citations() -> list[tuple[str, str, list[str]]]:
    return [(doc.relative_to(REPO).as_posix(), unit, cited)
            for doc in DOCUMENTS for unit, cited in units(doc.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("doc,unit,cited", all_citations(), ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_each_quoted_figure_is_in_the_results_file_it_cites(doc, unit, cited):
    files = [path for citation in cited for path in cited_files(citation)]
    missing = [c for c in cited if not cited_files(c)]
    assert not missing, f"{doc}: cites {missing}, which do not exist"
    numbers = [float(n) for path in files for n in NUMBER.findall(path.read_text(encoding="utf-8", errors="replace"))]
    unmatched = [f for f in figures(unit) if not matches(f, numbers)]
    assert not unmatched, f"{doc}: {unmatched} not in {', '.join(cited)}:\n{unit}"


def test_the_checker_catches_a_figure_edited_by_hand(tmp_path):
    numbers = [0.5812, 53.5, 1.5e-4]
    assert matches("0.581", numbers) and matches("58.1", numbers) and matches("53.5", numbers)
    assert not matches("0.591", numbers) and not matches("53.6", numbers)
    text = "Intro with a figure 0.581 (benchmarks/results/x.md).\n\n| a | 0.7 |\n| b | 53.5 |\n\nNo citation 9.99."
    found = units(text)
    assert [cited for _, cited in found] == [["benchmarks/results/x.md"]] * 3
    assert figures("speed 1.24x `--lr 0.1` (benchmarks/results/v1.2.md), target >= 0.8x") == ["1.24"]


# A throughput or time per step is always a measurement: outside backticks it must cite a results
# file. "No results file" used to be accepted as an excuse; every such figure was re-measured or
# dropped, so it is not any more.
SPEED = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s*(?:img/s|images/s|samples/s|MP/s|Mpx/s|files/s|steps/s|patches/s"
                   r"|ms/step|s/step|ms/image|s/image|s/img)\b")


def uncited_speeds(text: str) -> list[str]:
    """Speeds quoted in units that cite no results file."""
    return [speed for unit, cited in all_units(text) if not cited
            for speed in SPEED.findall(re.sub(r"`[^`]*`", " ", unit))]


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda d: d.name)
def test_every_quoted_speed_cites_a_results_file(doc):
    speeds = uncited_speeds(doc.read_text(encoding="utf-8"))
    assert not speeds, f"{doc.relative_to(REPO)}: {speeds} quoted without a benchmarks/results/ file"


def test_the_speed_check_catches_an_uncited_speed():
    assert uncited_speeds("The loader reached 52.5 samples/s here.") == ["52.5 samples/s"]
    assert uncited_speeds("It reached 52.5 samples/s (benchmarks/results/loader.md).") == []
    assert uncited_speeds("An earlier session reached 52.5 samples/s (no results file).") == ["52.5 samples/s"]
    assert uncited_speeds("Run `bench.py --min 3 img/s` or see the table.\n\n| a | 3 img/s |") == ["3 img/s"]


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda d: d.name)
def test_no_figure_is_excused_by_having_no_results_file(doc):
    """Issue 24 item 11: every figure comes from a results file; one without a file is re-measured or dropped."""
    excuses = re.findall(r"[^.\n]*\bno\s+results\s+files?\b[^.\n]*", doc.read_text(encoding="utf-8"), re.I)
    assert not excuses, f"{doc.relative_to(REPO)}: {excuses}"
