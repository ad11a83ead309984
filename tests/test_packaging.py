"""What each make target installs, and that the declared dependencies match what the code uses.

``make run`` must start without the test tools (playwright, mypy, hypothesis: a 75 s first
start), every install must be pinned by constraints.txt, and the server must declare each
package it imports rather than lean on a dependency's dependencies.
"""

from __future__ import annotations

import ast
import configparser
import re
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"gateway", "providers", "web"}
# Imported only where the extra is installed: uvloop by the CLI when present, requests by the
# Python client, which the server never imports.
OPTIONAL = {"uvloop": "speed", "requests": "client"}
DEV_TOOLS = {"pytest", "pytest-aiohttp", "hypothesis", "playwright", "mypy", "ruff",
             "types-pyyaml", "types-requests", "requests"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> dict[str, list[Requirement]]:
    """``install_requires`` under "", then each extra by name, from setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")

    def parse(text: str) -> list[Requirement]:
        lines = (line.strip() for line in text.splitlines())
        return [Requirement(line) for line in lines if line and not line.startswith("#")]

    found = {"": parse(cfg["options"]["install_requires"])}
    found.update({extra: parse(text) for extra, text in cfg["options.extras_require"].items()})
    return found


def make_dry_run(target: str) -> list[str]:
    """The pip installs ``make TARGET`` would run from scratch (nothing is executed)."""
    make = shutil.which("make")
    assert make is not None
    out = subprocess.run(  # noqa: S603 - make -n: prints, runs nothing
        [make, "-n", "-B", target], cwd=ROOT, capture_output=True, text=True,
        check=True, timeout=60).stdout
    return [line for line in out.splitlines()
            if "pip install" in line and "--upgrade pip" not in line]


def extras_of(line: str) -> set[str]:
    match = re.search(r"\.\[([^\]]*)\]", line)
    return set(match.group(1).split(",")) if match else set()


def test_make_run_installs_the_runtime_only() -> None:
    installs = make_dry_run("run")
    assert installs, "make run installs the package"
    for line in installs:
        assert extras_of(line) == set(), line
        assert "-c constraints.txt" in line, line


@pytest.mark.parametrize(("target", "needed"), [
    ("test", {"test", "browser", "client"}),
    ("lint", {"lint", "test", "browser", "client"}),  # mypy reads what the tests import
])
def test_test_and_lint_install_what_they_need_pinned(target: str, needed: set[str]) -> None:
    installs = make_dry_run(target)
    assert set().union(*(extras_of(line) for line in installs)) == needed
    assert all("-c constraints.txt" in line for line in installs), installs


def test_runtime_requirements_hold_no_dev_tool() -> None:
    declared = requirements()
    runtime = {norm(r.name) for r in declared[""]}
    assert not runtime & DEV_TOOLS
    assert {norm(r.name) for r in declared["client"]} == {"requests"}
    assert {"pytest", "hypothesis"} <= {norm(r.name) for r in declared["test"]}
    assert {norm(r.name) for r in declared["browser"]} == {"playwright"}
    assert {"mypy", "ruff"} <= {norm(r.name) for r in declared["lint"]}


def imported_modules() -> dict[str, str]:
    """Top-level third-party modules the shipped packages import -> a file importing it."""
    found: dict[str, str] = {}
    for package in sorted(FIRST_PARTY):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared() -> None:
    declared = requirements()
    runtime = {norm(r.name) for r in declared[""]}
    dists = packages_distributions()
    missing = []
    for module, where in imported_modules().items():
        names = {norm(d) for d in dists.get(module, [module])}
        extra = OPTIONAL.get(module)
        if extra is not None:
            ok = bool(names & {norm(r.name) for r in declared[extra]})
        else:
            ok = bool(names & runtime)
        if not ok:
            missing.append(f"{module} (imported by {where})")
    assert not missing, "declare in setup.cfg: " + ", ".join(missing)


def test_constraints_pin_every_requirement() -> None:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not a pin: {line!r}"
            pins[norm(name)] = version
    unpinned = []
    for requirement in (r for reqs in requirements().values() for r in reqs):
        pin = pins.get(norm(requirement.name))
        if pin is None or not requirement.specifier.contains(pin, prereleases=True):
            unpinned.append(str(requirement))
    assert not unpinned, "run `make constraints` (see README): " + ", ".join(unpinned)


def test_docker_and_ci_use_the_constraints() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY setup.cfg pyproject.toml README.md constraints.txt" in dockerfile
    assert re.search(r"pip (wheel|install) [^\n]*-c constraints\.txt", dockerfile)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make lint" in ci and "make test" in ci  # which install through the constraints


def test_docker_image_config_logs_to_stdout(tmp_path: Path) -> None:
    """The image's default config has no log file (docker logs reads stdout) and keeps its store
    on the volume, by the very sed expression the Dockerfile runs on config.yaml."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r"RUN sed -i -E '([^']+)'", dockerfile)
    assert match is not None
    sed = shutil.which("sed")
    assert sed is not None
    copy = tmp_path / "config.yaml"
    shutil.copy(ROOT / "config.yaml", copy)
    subprocess.run([sed, "-i", "-E", match.group(1), str(copy)], check=True,  # noqa: S603
                   timeout=10)
    assert yaml.safe_load((ROOT / "config.yaml").read_text())["logging"]["file"]
    assert yaml.safe_load(copy.read_text())["logging"]["file"] is None
    assert yaml.safe_load(copy.read_text())["storage"]["url"] \
        == "sqlite:////var/lib/sms-gateway/sms-gateway.db"
    assert "VOLUME /var/lib/sms-gateway" in dockerfile
