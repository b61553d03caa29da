"""The image (deploy/Dockerfile) and its locks: hashed install before the source, non-root, no secret."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from types import ModuleType

from castai_focus_dagster_tests.deploy.helm import (
    DEPLOY,
    REPO,
    SETTING_NAMES,
)

# --------------------------------------------------------------------------------------------------
# The image
# --------------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical if text]


def test_dockerfile_installs_the_hashed_lock_before_the_source_and_runs_as_non_root() -> None:
    steps = dockerfile_instructions()
    kinds = [kind for kind, _ in steps]
    args = [arg for _, arg in steps]
    assert args[kinds.index("FROM")] == "${PYTHON_IMAGE}" and "python:3.11-slim" in " ".join(args[:2])
    assert ("WORKDIR", "/opt/dagster/app") in steps
    lock_copy = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and "requirements-prod.lock" in a)
    lock_install = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "--require-hashes" in a)
    source_copy = next(i for i, (k, a) in enumerate(steps) if k == "COPY" and "castai_focus_dagster" in a)
    project_install = next(i for i, (k, a) in enumerate(steps) if k == "RUN" and "--no-deps" in a)
    assert lock_copy < lock_install < source_copy < project_install
    users = [arg for kind, arg in steps if kind == "USER"]
    assert users and users[-1].split(":")[0] == "10001", "numeric non-root user, last USER wins"
    assert "ENTRYPOINT" not in kinds, "the chart and the run launcher pass the full command as args"
    cmd = json.loads(args[kinds.index("CMD")])
    assert cmd[:3] == ["dagster", "code-server", "start"] and cmd[-2:] == [
        "-m",
        "castai_focus_dagster.definitions",
    ]
    assert ("EXPOSE", "3030") in steps


def test_dockerfile_bakes_in_no_instance_config_and_no_secret() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    copied = " ".join(arg for kind, arg in dockerfile_instructions() if kind in {"COPY", "ADD"})
    assert "dagster.yaml" not in copied and "workspace.yaml" not in copied
    env_names = re.findall(
        r"\b([A-Z][A-Z0-9_]*)=", " ".join(a for k, a in dockerfile_instructions() if k in {"ENV", "ARG"})
    )
    assert not [n for n in env_names if re.search(r"KEY|SECRET|TOKEN|PASSWORD", n) or n in SETTING_NAMES]
    assert "CASTAI_API_KEY" not in text and "AWS_SECRET" not in text


def test_dockerignore_admits_only_what_the_image_copies() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    sources = {
        token.rstrip("/")
        for kind, arg in dockerfile_instructions()
        if kind == "COPY"
        for token in arg.split()[:-1]
        if not token.startswith("--")
    }
    assert admitted == sources
    assert [source for source in sources if not (REPO / source).exists()] == []
    pyproject = (REPO / "pyproject.toml").read_text()
    readme = re.search(r'^readme\s*=\s*"([^"]+)"', pyproject, re.M)
    assert readme is None or readme.group(1) in sources, "the build needs the readme pyproject names"


def load_prod_lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prod_lock", DEPLOY / "prod_lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def test_prod_lock_is_the_current_runtime_subset_of_the_project_lock() -> None:
    prod_lock = load_prod_lock_module()
    expected = prod_lock.render_prod_lock(
        (REPO / "requirements.lock").read_text(), (REPO / "pyproject.toml").read_text()
    )
    assert (DEPLOY / "requirements-prod.lock").read_text() == expected, "run `python deploy/prod_lock.py`"
    full = prod_lock.parse_lock((REPO / "requirements.lock").read_text())
    subset = prod_lock.parse_lock(expected)
    assert all(full[name] == entry for name, entry in subset.items()), (
        "same pins and hashes as the tested lock"
    )
    dev_only = {"pytest", "moto", "mypy", "ruff", "hypothesis", "duckdb", "dagster-webserver"}
    assert not dev_only & subset.keys()


def test_prod_lock_closes_over_the_installed_runtime_requirements() -> None:
    """Independent of uv's annotations: walk the installed distributions' metadata from pyproject."""
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    prod_lock = load_prod_lock_module()
    locked = set(prod_lock.parse_lock((DEPLOY / "requirements-prod.lock").read_text()))
    roots = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    todo = [Requirement(r) for r in roots]
    needed: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        needed.add(name)
        for spec in importlib.metadata.distribution(name).requires or []:
            child = Requirement(spec)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append(child)
    assert needed - locked == set()


def test_every_package_import_is_satisfied_by_the_image_lock() -> None:
    import ast
    import importlib.metadata

    from packaging.utils import canonicalize_name

    prod_lock = load_prod_lock_module()
    locked = set(prod_lock.parse_lock((DEPLOY / "requirements-prod.lock").read_text()))
    providers = importlib.metadata.packages_distributions()
    top_level: set[str] = set()
    for path in (REPO / "castai_focus_dagster").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                top_level |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top_level.add(node.module.split(".")[0])
    third_party = top_level - set(sys.stdlib_module_names) - {"castai_focus_dagster", "__future__"}
    # Type-checking-only stub packages are not runtime imports.
    third_party -= {name for name in third_party if name.startswith("mypy_boto3")}
    unsatisfied = {
        module
        for module in third_party
        if not {canonicalize_name(d) for d in providers.get(module, [])} & locked
    }
    assert unsatisfied == set()
