"""The documentation site builds with warnings as errors, and its API reference covers the
public API."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import interp

ROOT = Path(__file__).resolve().parents[1]


def _load_extension():
    spec = importlib.util.spec_from_file_location("griffe_sections", ROOT / "docs/_ext/griffe_sections.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_section_titles_get_the_blank_line_griffe_needs():
    sep = _load_extension().separate_sections
    doc = "Summary.\n\nArgs:\n    x: a thing.\nReturns:\n    y.\nRaises:\n    ValueError: bad x.\n"
    assert sep(doc) == "Summary.\n\nArgs:\n    x: a thing.\n\nReturns:\n    y.\n\nRaises:\n    ValueError: bad x.\n"
    assert sep(doc) == sep(sep(doc))                       # idempotent
    assert sep("The Returns: of a sentence stay.\n") == "The Returns: of a sentence stay.\n"


def test_bare_doctests_become_examples_sections():
    titled = _load_extension().titled_doctests
    module = "Text.\n\n>>> x = 1\n>>> x\n1\n\nMore text.\n"
    assert titled(module) == "Text.\n\nExamples:\n    >>> x = 1\n    >>> x\n    1\n\nMore text.\n"
    under = "Summary.\n\nExamples:\n    >>> x = 1\n"
    assert titled(under) == under                          # already under a title: unchanged
    assert titled(titled(module)) == titled(module)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    mkdocs = shutil.which("mkdocs", path=os.path.dirname(sys.executable)) or shutil.which("mkdocs")
    assert mkdocs, "mkdocs is not installed: pip install -e '.[dev]' (the docs tools are in the dev extra)"
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    warnings = [line for line in run.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert run.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(warnings or [run.stderr[-3000:]])
    return out


def test_every_public_name_has_an_api_entry(site):
    ids = set()
    for page in (site / "api").glob("*.html"):
        ids |= set(re.findall(r'id="(interp\.[\w.]+)"', page.read_text()))
    missing = []
    for name in interp.__all__:
        obj = getattr(interp, name)
        if isinstance(obj, types.ModuleType):
            found = obj.__name__ in ids
        else:
            # the entry of the object itself: `interp.heads.head_scores`, not `interp.Model.head_scores`
            found = any(i.rsplit(".", 1) == [i.rsplit(".", 1)[0], name] and
                        (obj.__module__ + ".").startswith(i.rsplit(".", 1)[0] + ".") for i in ids)
        if not found:
            missing.append(name)
    assert not missing, f"public names with no API entry under docs/api/: {missing}"


def test_howtos_and_notebooks_are_pages(site):
    for page in ("record-and-decompose", "find-writers", "patch-a-circuit", "corpus-statistics-torchrun",
                 "read-the-report"):
        assert (site / "howto" / f"{page}.html").stat().st_size > 5_000
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        html = (site / "notebooks" / f"{nb.stem}.html").read_text()
        assert "import interp" in html, f"{nb.name} rendered without its code"


@pytest.mark.slow
@pytest.mark.parametrize("page", ["record-and-decompose", "find-writers", "patch-a-circuit",
                                  "corpus-statistics-torchrun"])
def test_howto_examples_run(page, tmp_path, monkeypatch):
    """Each how-to page's Python blocks run in order, in one namespace, as a reader would paste
    them; a block that needs a launcher (``init_distributed``) is left to the torchrun tests."""
    text = (ROOT / "docs" / "howto" / f"{page}.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "init_distributed" not in b]
    assert blocks, f"{page}.md has no Python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/howto/{page}.md block {i}", "exec"), namespace)
