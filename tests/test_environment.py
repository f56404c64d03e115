"""environment.yml (conda) and pyproject.toml (pip) name the same pinned dependencies."""
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = set(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs |= set(extra)
    return reqs


def _conda_pip_requirements() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e ." in pip_section, "the conda environment installs the package itself"
    assert "python=3.11" in env["dependencies"]
    return {r for r in pip_section if r != "-e ."}


def test_same_dependencies():
    assert _pyproject_requirements() == _conda_pip_requirements()


def test_torch_is_pinned_to_the_cpu_wheel_version():
    assert "torch==2.13.0" in _pyproject_requirements()
    assert all("==" in r for r in _pyproject_requirements()), "every dependency is pinned"


def test_readme_names_the_two_commands_and_ci_calls_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "./run_all.sh" in readme and "./run_tests.sh" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run_tests.sh" in ci
