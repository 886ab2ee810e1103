"""requirements.lock against pyproject.toml: every dependency (dev extras included) pinned at a
version its range allows, no CUDA package and no torch (the Makefile lets pip choose torch),
and the installed direct dependencies are the locked versions."""

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [Requirement(line) for line in lines]


def test_every_dependency_is_pinned_within_its_range() -> None:
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside {requirement.specifier}: run `make lock`"
        )


def test_no_torch_and_no_cuda_in_the_lock() -> None:
    names = set(locked())
    assert len(names) > 50
    assert "torch" not in names
    assert not {n for n in names if n.startswith(("nvidia", "triton", "cuda"))}


def test_the_environment_holds_the_locked_versions() -> None:
    # The direct dependencies: the tests then run against what the lock installs.
    pins = locked()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        if name != "torch":
            installed = metadata.version(name)
            assert installed == pins[name], f"{name} {installed} installed, {pins[name]} locked"
