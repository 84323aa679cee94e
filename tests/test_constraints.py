"""constraints.txt pins every dependency, and every install path uses it.

pyproject.toml keeps version ranges (for those who install recs as a library); make, .ci/run
and the Dockerfile install with ``-c constraints.txt`` so each build gets the same versions.
A dependency or extra added to pyproject.toml without re-pinning (.ci/pin) fails here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
        out[canonicalize_name(name)] = Version(version)
    return out


def requirements() -> list[Requirement]:
    """Every requirement of the project and of each optional extra (the project's own
    ``recs[...]`` self-references left out)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        texts += extra
    return [r for r in map(Requirement, texts) if canonicalize_name(r.name) != "recs"]


def test_every_dependency_and_extra_is_pinned_within_its_range():
    pinned = pins()
    problems = []
    for req in requirements():
        version = pinned.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name}: not pinned")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}: pinned {version}, outside {req.specifier}")
    assert problems == []


def test_make_ci_and_the_dockerfile_install_with_the_constraints():
    uses = re.compile(r"pip install .*-c constraints\.txt")
    makefile = (ROOT / "Makefile").read_text()
    assert uses.search(makefile), "Makefile's venv does not install with -c constraints.txt"
    assert re.search(r"^\$\(BIN\)/recs:.*constraints\.txt", makefile, re.M), \
        "the venv is not rebuilt when constraints.txt changes"
    assert uses.search((ROOT / "Dockerfile").read_text())
    assert "COPY pyproject.toml constraints.txt" in (ROOT / "Dockerfile").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make venv" in ci and "constraints.txt" in ci  # the venv, checked against the pins
