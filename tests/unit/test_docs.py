"""The documents: the README stays short, and no document sends a reader to a file that is not
in the repository (a relative link, its anchor, or a path written in backticks)."""

from __future__ import annotations

import fnmatch
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 250
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
#: A backticked name with one of these endings is a file of the repository, wherever it is.
FILE_SUFFIXES = (".md", ".py", ".toml", ".txt", ".sql", ".json", ".cfg", ".ini", ".yml", ".yaml")

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_NOT_A_PATH = re.compile(r"[\s*<>{}()\[\]=,;'\"$~@|]|\.\.\.|://")


def _prose(path: Path) -> str:
    """The document without its fenced code blocks (commands and output, not references)."""
    return _FENCE.sub("", path.read_text(encoding="utf-8"))


@cache
def _ignored() -> tuple[str, ...]:
    """Top-level names .gitignore leaves out (runtime folders such as .cache/ and .venv/)."""
    lines = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    return tuple(
        line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")
    )


def _repository_path(text: str) -> str | None:
    """``text`` (a backticked span) as a repository path, or None when it is clearly not one:
    a command, a URL, an absolute path, a value such as ``application/json``."""
    text = text.split("::", 1)[0].strip()
    if not text or text.startswith(("/", "-", ".venv", "http")) or _NOT_A_PATH.search(text):
        return None
    first = text.split("/", 1)[0]
    if any(fnmatch.fnmatch(first, pattern) for pattern in _ignored()):
        return None
    if "/" in text.rstrip("/"):
        if (ROOT / first).exists() or text.endswith(FILE_SUFFIXES):
            return text
        return None
    return text if text.endswith(("/", *FILE_SUFFIXES)) else None


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def _anchors(path: Path) -> frozenset[str]:
    return frozenset(_slug(h) for h in _HEADING.findall(_prose(path)))


def test_readme_is_at_most_250_lines() -> None:
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md is {lines} lines: move detail to docs/"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_backticked_paths_exist(document: Path) -> None:
    missing = sorted(
        {
            path
            for span in _CODE.findall(_prose(document))
            if (path := _repository_path(span)) is not None and not (ROOT / path).exists()
        }
    )
    assert missing == [], f"{document.name} names files that are not in the repository"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_their_anchors_exist(document: Path) -> None:
    broken: list[str] = []
    for target in _LINK.findall(_CODE.sub("", _prose(document))):
        if re.match(r"^[a-z][a-z0-9+.\-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(target)
    assert broken == [], f"{document.name} links to what does not exist"


def test_the_path_check_tells_paths_from_values() -> None:
    """The heuristic above: what it takes for a repository path, and what it leaves alone."""
    assert _repository_path("events/service/relay.py") == "events/service/relay.py"
    assert _repository_path("docs/contract.md") == "docs/contract.md"
    assert _repository_path("CONTRACT.md") == "CONTRACT.md"
    assert _repository_path("nowhere/module.py") == "nowhere/module.py"
    assert _repository_path("tests/unit/test_docs.py::test_x") == "tests/unit/test_docs.py"
    assert _repository_path("statemachine/") == "statemachine/"
    for value in (
        "application/json",
        "bucket/prefix",
        "/sites/Name/...",
        ".cache/stack/kafka-scram-password",
        "https://example.org/a.md",
        "synclife bench --scale",
        "sync.commands",
        "SYNCLIFE_DATABASE_URL",
    ):
        assert _repository_path(value) is None, value
    assert _slug("Lanes and the fetch hold") == "lanes-and-the-fetch-hold"
    assert _slug("Client: `KafkaSettings`") == "client-kafkasettings"


def test_every_setting_is_documented_and_every_documented_setting_exists() -> None:
    """docs/configuration.md names each field of ``Settings`` as its environment variable, and
    names no ``SYNCLIFE_*`` variable that is neither a setting nor one of the test knobs it
    lists as such."""
    from events.service.settings import Settings

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"\bSYNCLIFE_[A-Z0-9_]*[A-Z0-9]\b", text))
    settings = {f"SYNCLIFE_{name.upper()}" for name in Settings.model_fields}
    assert sorted(settings - documented) == []
    # Variables read outside Settings (crash points, the fault suite's and fuzz tests' knobs).
    others = {v for v in documented - settings if v in _environment_reads()}
    assert sorted(documented - settings - others) == []


@cache
def _environment_reads() -> frozenset[str]:
    """Every ``SYNCLIFE_*`` name the code or the tests spell out."""
    names: set[str] = set()
    for folder in ("events", "statemachine", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            names.update(re.findall(r"SYNCLIFE_[A-Z0-9_]*[A-Z0-9]", path.read_text("utf-8")))
    return frozenset(names)
