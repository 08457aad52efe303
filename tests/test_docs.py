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
