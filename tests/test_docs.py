"""The documentation runs and builds:

* every docstring example in the package (doctest);
* every ```python block of the README and of docs/*.md, each file's blocks in order in one
  namespace, as a reader would paste them (a block meant not to run is preceded by the line
  ``<!-- no-test -->``; ```console, ```text and ```bash blocks never run);
* the documentation site, with ``mkdocs build --strict`` (a broken link, anchor, snippet or API
  reference fails it), offline.
"""
import doctest
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pan_repair

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["pan_repair"] + [m.name for m in pkgutil.walk_packages(pan_repair.__path__, "pan_repair.")]
WITH_EXAMPLES = [name for name in MODULES if ">>> " in inspect.getsource(importlib.import_module(name))]

NO_TEST = "<!-- no-test -->"
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_the_public_modules_have_examples():
    assert {"pan_repair", "pan_repair.detect.detector", "pan_repair.repair.consistency", "pan_repair.repair.pruning",
            "pan_repair.repair.regularizer", "pan_repair.metrics.bias"} <= set(WITH_EXAMPLES)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, name


def code_blocks(path: Path) -> list[tuple[str, int, str, bool]]:
    """``(language, first line number, code, marked no-test)`` of every fenced block of ``path``."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, language = opening.groups()
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        previous = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        code = "\n".join(line[len(indent):] for line in lines[i + 1:end])
        blocks.append((language, i + 2, code, previous == NO_TEST))
        i = end + 1
    return blocks


def python_examples(path: Path) -> list[tuple[int, str]]:
    return [(line, code) for language, line, code, skip in code_blocks(path) if language == "python" and not skip]


WITH_PYTHON = [path for path in DOC_FILES if python_examples(path)]


def test_the_docs_have_examples():
    names = {str(path.relative_to(ROOT)) for path in WITH_PYTHON}
    assert {"README.md", "docs/getting-started.md", "docs/callbacks/monitor.md", "docs/repairs/padding.md",
            "docs/metrics.md", "docs/compare.md"} <= names
    skipped = [(path.name, line) for path in DOC_FILES for language, line, _, skip in code_blocks(path) if skip]
    assert len(skipped) <= 3, f"keep the blocks that do not run few: {skipped}"


@pytest.mark.slow
@pytest.mark.parametrize("path", WITH_PYTHON, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_examples_run(path, tmp_path, monkeypatch):
    """The file's Python blocks run in order, in a fresh folder (the files they write land there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores
    namespace = {"__name__": "__doc_example__"}
    try:
        for line, code in python_examples(path):
            # line numbers of the tracebacks are the file's own
            exec(compile("\n" * (line - 1) + code, str(path), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)


def test_readme_is_short_and_keeps_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    bash = "\n".join(code for language, _, code, _ in code_blocks(ROOT / "README.md") if language == "bash")
    assert re.search(r"^make demo\b", bash, re.M) and re.search(r"^make test\b", bash, re.M)


def test_docs_site_builds_strict_and_offline(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="the docs tools are not installed: pip install -e '.[docs]' "
                                           "(make test and make docs install them)")
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    pages = list(site.rglob("*.html"))
    assert (site / "index.html").is_file() and (site / "api" / "detect.html").is_file()
    # every page opens from disk (use_directory_urls: false) and nothing is fetched from the network
    for page in pages:
        html = page.read_text()
        assert "fonts.googleapis.com" not in html and "fonts.gstatic.com" not in html, page
        assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?://", html), page
    assert 'id="pan_repair.detect.detector.find_pans"' in (site / "api" / "detect.html").read_text()
