"""The container image recipe, exercised as far as a machine without a container engine allows.

- The Dockerfile is read instruction by instruction: two stages on python:3.11-slim, dependencies from the lock with
  ``--no-deps`` and wheels only, a non-root numeric user (the chart's runAsUser), ``ENTRYPOINT ["falco-misp", "run"]``,
  OCI labels, nothing but the virtualenv copied into the final stage.
- .dockerignore is applied to the repository (Docker's rules: last matching pattern wins, ``!`` re-includes) and the
  resulting build context is exactly what the Dockerfile copies.
- The build stage's pip steps run for real, from that build context, into a fresh virtualenv: wheel of the package,
  the lock installed with ``--no-deps --only-binary=:all:``, ``pip check``; the runtime closure computed there is
  exactly the lock; with pip and setuptools removed (as in the image), ``falco-misp --help``, ``falco-misp run --help``
  and a real ``falco-misp render`` work. PyPI is the only network peer; every cache stays in the test's tmp folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deploy.chartkit import REPO, chart
from deploy.lockfile import installed_pins, parse_lock, runtime_edges

DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements.lock"
DOCKERIGNORE = REPO / ".dockerignore"
BASE_IMAGE = "python:3.11-slim"
PIP_TIMEOUT = 240  # seconds for one pip step (downloads from PyPI)


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction."""

    stage: int
    """0 before the first FROM (global ARGs), then 1, 2..."""
    keyword: str
    """FROM, RUN, COPY... (upper case)."""
    args: str
    """The rest of the instruction, continuation lines joined."""


def instructions(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile (comments dropped, ``\\`` continuations joined)."""
    out: list[Instruction] = []
    stage = 0
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(stage, keyword, " ".join(args.split())))
    assert not pending, "a continuation line ends the file"
    return out


@pytest.fixture(scope="module")
def recipe() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


def stage(recipe: list[Instruction], number: int) -> list[Instruction]:
    return [i for i in recipe if i.stage == number]


# ----------------------------------------------------------------------------------------------- the Dockerfile
def test_two_stages_on_the_official_slim_python(recipe: list[Instruction]) -> None:
    (arg,) = [i for i in stage(recipe, 0) if i.keyword == "ARG"]
    assert arg.args == f"PYTHON_IMAGE={BASE_IMAGE}"
    froms = [i.args for i in recipe if i.keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]


def test_build_stage_installs_exactly_the_lock_and_the_wheel(recipe: list[Instruction]) -> None:
    runs = " && ".join(i.args for i in stage(recipe, 1) if i.keyword == "RUN")
    steps = [s.strip() for s in runs.split("&&")]
    pip = "/opt/falco-misp/bin/pip"
    assert "python -m venv /opt/falco-misp" in steps
    assert f"{pip} install --no-deps --only-binary=:all: -r requirements.lock" in steps
    assert f"{pip} wheel --no-deps --wheel-dir /wheels ." in steps
    assert f"{pip} install --no-deps /wheels/*.whl" in steps
    assert f"{pip} check" in steps
    assert steps.index(f"{pip} check") > steps.index(f"{pip} install --no-deps /wheels/*.whl")
    assert steps[-1] == f"{pip} uninstall -y -q pip setuptools"
    copies = [i.args for i in stage(recipe, 1) if i.keyword == "COPY"]
    assert copies == [
        "requirements.lock ./",
        "pyproject.toml README.md LICENSE ./",
        "operator ./operator",
        "rules ./rules",
    ]


def test_final_stage_is_non_root_with_the_operator_entrypoint(recipe: list[Instruction]) -> None:
    final = stage(recipe, 2)
    keywords = [i.keyword for i in final]
    assert keywords.count("USER") == 1
    (user,) = [i.args for i in final if i.keyword == "USER"]
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), "a numeric, non-root user and group"
    uid, gid = (int(x) for x in user.split(":"))
    security = chart().values["podSecurityContext"]
    assert (uid, gid) == (security["runAsUser"], security["runAsGroup"])
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k in ("RUN", "COPY"))
    (entrypoint,) = [i.args for i in final if i.keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["falco-misp", "run"]
    assert "CMD" not in keywords
    (expose,) = [i.args for i in final if i.keyword == "EXPOSE"]
    values = chart().values
    assert [int(p) for p in expose.split()] == [values["health"]["port"], values["metrics"]["port"]]
    # Only the virtualenv comes from the build stage; no compiler, no package install, no pip left.
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies == ["--from=build /opt/falco-misp /opt/falco-misp"]
    final_runs = " ".join(i.args for i in final if i.keyword == "RUN")
    for banned in ("apt-get install", "apk add", "gcc", "build-essential", "pip install", "curl ", "wget "):
        assert banned not in final_runs
    assert "pip uninstall -y -q pip setuptools wheel" in final_runs
    assert f"useradd --system --uid {uid} --gid {gid}" in final_runs
    (env,) = [i.args for i in final if i.keyword == "ENV"]
    assert env.startswith("PATH=/opt/falco-misp/bin:$PATH")


def test_oci_labels(recipe: list[Instruction]) -> None:
    labels = " ".join(i.args for i in stage(recipe, 2) if i.keyword == "LABEL")
    keys = set(re.findall(r"(org\.opencontainers\.image\.[a-z.]+)=", labels))
    assert {
        "org.opencontainers.image.title",
        "org.opencontainers.image.description",
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.created",
        "org.opencontainers.image.licenses",
        "org.opencontainers.image.base.name",
    } <= keys
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert any(i.args == f"VERSION={version}" for i in stage(recipe, 2) if i.keyword == "ARG")
    assert chart().metadata["appVersion"] == version


# -------------------------------------------------------------------------------------------- the build context
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex over a relative path."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def build_context(root: Path = REPO) -> list[str]:
    """The files Docker sends as build context: .dockerignore applied as Docker does (a pattern matching a path or
    one of its parent folders excludes it, ``!`` re-includes, the last matching pattern wins)."""
    rules: list[tuple[bool, str, re.Pattern[str]]] = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip().strip("/"))
        rules.append((include, pattern, _pattern_regex(pattern)))

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for include, _pattern, regex in rules:
            if any(regex.fullmatch(p) for p in prefixes):
                result = not include
        return result

    def may_reinclude(folder: str) -> bool:
        """Whether an include pattern could match something inside an excluded folder."""
        return any(
            include and (pattern.startswith(folder + "/") or not re.match(r"[\w.-]+(/|$)", pattern))
            for include, pattern, _regex in rules
        )

    kept: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirnames[:] = sorted(
            d for d in dirnames if d != ".git" and (not excluded(prefix + d) or may_reinclude(prefix + d))
        )
        kept.extend(prefix + f for f in filenames if not excluded(prefix + f))
    return sorted(kept)


def test_build_context_is_what_the_dockerfile_copies(recipe: list[Instruction]) -> None:
    context = build_context()
    tops = {p.split("/")[0] for p in context}
    assert tops == {"requirements.lock", "pyproject.toml", "README.md", "LICENSE", "operator", "rules"}
    assert "operator/falco_misp/cli.py" in context and "rules/outbound-addresses.yaml" in context
    assert not [p for p in context if "__pycache__" in p or p.endswith(".pyc") or ".egg-info" in p]
    for instruction in stage(recipe, 1):
        if instruction.keyword == "COPY":
            *sources, _destination = instruction.args.split()
            for source in sources:
                assert any(p == source or p.startswith(source + "/") for p in context), source


# ------------------------------------------------------------------------------------------------------ the lock
def test_lock_pins_exact_versions_of_the_project_dependencies() -> None:
    pins = parse_lock(LOCK.read_text(encoding="utf-8"))
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for raw in project["dependencies"]:
        requirement = Requirement(raw)
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not pinned"
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement.name}=={version} vs {raw}"
    test_tools = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["test"]}
    assert not test_tools & set(pins), "test tools do not belong in the image"
    assert canonicalize_name(project["name"]) not in pins, "the package comes from its wheel"


def test_lock_covers_the_runtime_closure_installed_here() -> None:
    """Every runtime requirement reachable in this virtualenv is pinned (a lock refresh is due when this fails:
    ``.venv/bin/python tests/deploy/lockfile.py > requirements.lock``)."""
    pins = parse_lock(LOCK.read_text(encoding="utf-8"))
    missing = sorted({canonicalize_name(e.requirement.name) for e in runtime_edges()} - set(pins))
    assert missing == []


# ------------------------------------------------------------------------------------ the recipe, for real
def _run(args: list[str], *, env: dict[str, str], cwd: Path, timeout: float = PIP_TIMEOUT) -> str:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(args)} -> {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_image_recipe_builds_installs_and_runs(tmp_path: Path) -> None:
    context = tmp_path / "context"
    for rel in build_context():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, context / rel)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(
        PIP_CACHE_DIR=str(tmp_path / "pip-cache"),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        HOME=str(tmp_path / "home"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    venv = tmp_path / "opt-falco-misp"
    bin_dir = venv / "bin"
    pip = [str(bin_dir / "python"), "-m", "pip"]

    # The build stage's RUN steps, in order.
    _run([sys.executable, "-m", "venv", str(venv)], env=env, cwd=context, timeout=120)
    _run([*pip, "install", "-q", "--no-deps", "--only-binary=:all:", "-r", "requirements.lock"], env=env, cwd=context)
    _run([*pip, "wheel", "-q", "--no-deps", "--wheel-dir", str(tmp_path / "wheels"), "."], env=env, cwd=context)
    (wheel,) = (tmp_path / "wheels").glob("falco_misp_operator-*.whl")
    _run([*pip, "install", "-q", "--no-deps", str(wheel)], env=env, cwd=context)
    _run([*pip, "check"], env=env, cwd=context, timeout=120)

    # The closure computed from what is installed there is exactly the lock (no missing and no stale pin).
    (site,) = venv.glob("lib/python3.*/site-packages")
    lock = parse_lock((context / "requirements.lock").read_text(encoding="utf-8"))
    assert installed_pins(runtime_edges(path=[str(site)]), path=[str(site)]) == lock

    # As in the image: no pip, no setuptools; the console script from PATH, outside the source tree.
    _run([*pip, "uninstall", "-y", "-q", "pip", "setuptools"], env=env, cwd=context, timeout=120)
    run_env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}
    work = tmp_path / "work"
    work.mkdir()
    assert not (bin_dir / "pip").exists()
    top = _run(["falco-misp", "--help"], env=run_env, cwd=work, timeout=60)
    assert "render" in top and "run" in top
    run_help = _run(["falco-misp", "run", "--help"], env=run_env, cwd=work, timeout=60)
    for option in ("--namespace", "--all-namespaces", "--log-format", "--liveness", "--verbose", "--tick-seconds"):
        assert option in run_help
    where = _run(
        [
            str(bin_dir / "python"),
            "-c",
            "import kopf, falco_misp.cli, falco_misp.controller.handlers; print(falco_misp.cli.__file__)",
        ],
        env=run_env,
        cwd=work,
        timeout=60,
    )
    assert Path(where.strip()).is_relative_to(site)

    # The rule templates are in the wheel: a real render from the bundled sample list.
    feed = REPO / "examples" / "sample-text-feed.yaml"
    _run(["falco-misp", "render", "--feed", str(feed), "--out", str(work / "out"), "--quiet"], env=run_env, cwd=work)
    (rules,) = (work / "out").glob("*.yaml")
    text = rules.read_text(encoding="utf-8")
    assert "- rule:" in text and re.search(r"[\[,]203\.0\.113\.21[,\]]", text)
