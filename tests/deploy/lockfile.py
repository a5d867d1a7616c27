"""The runtime dependency closure of the package, read from the installed distributions, and the lock built from it.

``requirements.lock`` pins the exact versions the image installs (Dockerfile). It is generated from the virtualenv the
tests run in, limited to what ``falco-misp-operator`` needs at run time (its ``dependencies``, recursively, with
environment markers evaluated for this interpreter: the image's Python 3.11 on Linux), never the test tools:

    .venv/bin/python tests/deploy/lockfile.py > requirements.lock

test_image.py installs the lock and the wheel with ``--no-deps`` into a fresh virtualenv, as the Dockerfile does, and
checks that the closure computed there is exactly the lock.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import Distribution, PackageNotFoundError

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

PROJECT = "falco-misp-operator"
HEADER = """\
# Exact versions of the runtime dependencies of falco-misp-operator, installed by the Dockerfile.
# Generated from the project's virtualenv (runtime closure only, no test tools):
#   .venv/bin/python tests/deploy/lockfile.py > requirements.lock
# tests/deploy/test_image.py installs it as the Dockerfile does and checks it is exactly the runtime closure.
"""


@dataclass(frozen=True)
class Edge:
    """One requirement of one distribution on another."""

    parent: str
    """The distribution that requires it."""
    requirement: Requirement
    """The requirement as declared (name, extras, specifier)."""


def _distribution(name: str, path: Sequence[str] | None) -> Distribution:
    """The installed distribution ``name``, from ``path`` (site-packages folders) or this interpreter's."""
    if path is None:
        return Distribution.from_name(name)
    for dist in Distribution.discover(name=name, path=list(path)):
        return dist
    raise PackageNotFoundError(name)


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""}))


def runtime_edges(project: str = PROJECT, path: Sequence[str] | None = None) -> list[Edge]:
    """Every requirement reachable from ``project`` installed in ``path`` (default: this interpreter's).

    Markers are evaluated for this interpreter, which must match the one of ``path`` (Python version, platform).
    """
    edges: list[Edge] = []
    wanted: dict[NormalizedName, frozenset[str]] = {}
    todo: list[tuple[str, frozenset[str]]] = [(project, frozenset())]
    while todo:
        name, extras = todo.pop()
        dist = _distribution(name, path)
        for raw in dist.requires or ():
            requirement = Requirement(raw)
            if not _applies(requirement, extras):
                continue
            edges.append(Edge(dist.metadata["Name"], requirement))
            key = canonicalize_name(requirement.name)
            known = wanted.get(key)
            merged = (known or frozenset()) | frozenset(requirement.extras)
            if known is None or merged != known:
                wanted[key] = merged
                todo.append((requirement.name, merged))
    return edges


def installed_pins(edges: list[Edge], path: Sequence[str] | None = None) -> dict[NormalizedName, str]:
    """name -> installed version of every distribution the edges reach."""
    pins: dict[NormalizedName, str] = {}
    for edge in edges:
        key = canonicalize_name(edge.requirement.name)
        if key not in pins:
            try:
                pins[key] = _distribution(edge.requirement.name, path).version
            except PackageNotFoundError:
                raise SystemExit(f"{edge.requirement.name} (required by {edge.parent}) is not installed") from None
    return pins


def render_lock(pins: dict[NormalizedName, str]) -> str:
    """The lock file's text: a header, then ``name==version`` lines sorted by name."""
    return HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def parse_lock(text: str) -> dict[NormalizedName, str]:
    """name -> pinned version of a lock file (every line must be ``name==version``)."""
    pins: dict[NormalizedName, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specs = list(requirement.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version or requirement.marker:
            raise ValueError(f"line {number}: {raw!r} is not an exact pin name==version")
        key = canonicalize_name(requirement.name)
        if key in pins:
            raise ValueError(f"line {number}: {requirement.name} is pinned twice")
        pins[key] = specs[0].version
    return pins


if __name__ == "__main__":
    sys.stdout.write(render_lock(installed_pins(runtime_edges())))
