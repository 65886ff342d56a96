"""The README is a front door and the documentation site builds: short, its links resolve, its test
command is the one CI runs, and `mkdocs build --strict` (every link and anchor of docs/) succeeds."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI = REPO / ".ci" / "run"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def without_fences(markdown: str) -> str:
    return re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)


def without_code(markdown: str) -> str:
    """The text outside fenced code blocks and inline code spans (a link there is not a link)."""
    return re.sub(r"`[^`\n]*`", "", without_fences(markdown))


def slug(heading: str) -> str:
    """Python-Markdown's toc slug, which MkDocs uses for anchors."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", without_fences(page.read_text()), re.M)}


def readme_test_command() -> str:
    section = README.read_text().split("## Run the tests", 1)[1]
    block = re.search(r"^```bash\n(.*?)^```", section, re.S | re.M)
    assert block, "the README's 'Run the tests' section has no bash block"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 1, f"the test command is one line, got {lines}"
    return lines[0]


def ci_test_command() -> tuple[list[str], str]:
    lines = CI.read_text().splitlines()
    marker = next(i for i, line in enumerate(lines) if "run the tests" in line and line.startswith("#"))
    return lines[:marker], lines[marker + 1]


def test_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) < 220, f"README.md has {len(lines)} lines: move detail into docs/"


def test_readme_test_command_is_the_one_ci_runs() -> None:
    """CI runs the README's "run the tests" line character for character (it makes the venv too)."""
    readme = readme_test_command()
    _, ci = ci_test_command()
    assert readme == ci, f"README: {readme}\n.ci/run: {ci}"
    assert readme.startswith("python3 -m venv .venv && ") and readme.endswith("python -m pytest -q")
    assert "'.[dev,reference]'" in readme


def test_readme_relative_links_resolve() -> None:
    targets = LINK.findall(without_code(README.read_text()))
    relative = [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    assert relative, "the README links to no file: its links were not found"
    broken = []
    for target in relative:
        path, _, anchor = target.partition("#")
        file = (README.parent / path).resolve()
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor")
    for target in targets:
        if target.startswith("#") and target[1:] not in anchors(README):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, broken


def test_slug_matches_mkdocs() -> None:
    assert slug('Searching: "who is this?"') == "searching-who-is-this"
    assert slug("Keeping up with the archive: `gallery sync`") == "keeping-up-with-the-archive-gallery-sync"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
                    reason="mkdocs and mkdocs-material are not installed (pip install -e '.[docs]')")
def test_docs_site_builds_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "benchmarks" / "index.html").is_file()
