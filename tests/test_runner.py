"""The runner behind run_all.sh: which checkout's code the kernels run, the -p names it accepts, where a
smoke run's figures go, and Ctrl-C."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mechshift_utils
from mechshift_utils.core.validation import ParameterError
from mechshift_utils.notebook import checkout
from mechshift_utils.notebook.checkout import CHECKOUT_ENV, WrongCheckout, check_checkout
from mechshift_utils.notebook.params import NotebookParams, figures_dir_for
from mechshift_utils.notebook.runner import (REPO_ROOT, check_parameter_names, discover, main, notebook_parameters,
                                             run_all)


def _other_checkout(tmp_path: Path) -> Path:
    """A second checkout: a copy of the package beside a notebooks/ folder."""
    other = tmp_path / "other"
    shutil.copytree(REPO_ROOT / "mechshift_utils", other / "mechshift_utils",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (other / "notebooks").mkdir()
    return other


# --- the checkout the code comes from ------------------------------------------------------------

def test_the_package_of_another_checkout_stops_the_notebook(tmp_path, monkeypatch):
    other = _other_checkout(tmp_path)
    monkeypatch.setenv(CHECKOUT_ENV, str(REPO_ROOT))
    NotebookParams().validated()  # this checkout's package: fine
    monkeypatch.setattr(mechshift_utils, "__file__", str(other / "mechshift_utils" / "__init__.py"))
    with pytest.raises(WrongCheckout) as err:
        NotebookParams().validated()
    message = str(err.value)
    assert f"imported from {other / 'mechshift_utils'}" in message and f"serves the checkout {REPO_ROOT}" in message


def test_the_runner_checks_its_own_import(tmp_path, monkeypatch, capsys):
    other = _other_checkout(tmp_path)
    monkeypatch.setenv(CHECKOUT_ENV, str(other))  # run_all.sh of the other checkout, this package imported
    assert main(["--only", "01"]) == 2
    err = capsys.readouterr().err
    assert f"imported from {REPO_ROOT / 'mechshift_utils'}" in err and str(other) in err
    check_checkout(REPO_ROOT)  # and its own checkout passes


def test_a_copy_first_on_the_path_would_be_imported_without_the_runner(tmp_path):
    """The premise of the runner's PYTHONPATH: a kernel started in notebooks/ imports whatever comes
    first on its path (here a copy, as an editable install of another checkout would be)."""
    other = _other_checkout(tmp_path)
    code = "import mechshift_utils, sys; sys.stdout.write(mechshift_utils.__file__)"
    env = {**os.environ, "PYTHONPATH": str(other)}
    found = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           check=True).stdout
    assert Path(found).resolve() == (other / "mechshift_utils" / "__init__.py").resolve()


@pytest.mark.slow
def test_kernels_import_this_checkout_whatever_comes_first_on_the_path(tmp_path, monkeypatch):
    import nbformat

    other = _other_checkout(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(other))
    book = tmp_path / "nbs"
    book.mkdir()
    (book / "01_where.py").write_text(
        '# %% tags=["parameters"]\nsmoke = True\n\n# %%\nimport mechshift_utils\n'
        'from mechshift_utils.notebook.params import NotebookParams\nNotebookParams(smoke=smoke).validated()\n'
        'print(mechshift_utils.__file__)\n')
    executed = run_all({}, output_dir=tmp_path / "out", notebook_dir=book)
    outputs = nbformat.read(executed[0], as_version=4).cells[-1].outputs
    printed = "".join(o["text"] for o in outputs if o.get("name") == "stdout").strip()
    assert Path(printed).resolve() == (REPO_ROOT / "mechshift_utils" / "__init__.py").resolve()
    assert os.environ["PYTHONPATH"] == str(other) and CHECKOUT_ENV not in os.environ, "environment restored"


# --- smoke runs never write into figures/ -------------------------------------------------------

def test_a_smoke_run_never_writes_into_a_checkouts_figures(tmp_path, monkeypatch):
    other = _other_checkout(tmp_path)
    for figures in (REPO_ROOT / "figures", other / "figures"):
        assert figures_dir_for(str(figures), smoke=True) == str(figures.parent / "outputs" / "smoke_figures")
        assert figures_dir_for(str(figures), smoke=False) == str(figures)
    # the notebooks' own relative path, from notebooks/ of the other checkout, with this package imported
    monkeypatch.chdir(other / "notebooks")
    assert figures_dir_for("../figures", smoke=True) == str(other / "outputs" / "smoke_figures")
    # the checkout named by the runner counts even when it does not look like one
    served = tmp_path / "served"
    (served / "figures").mkdir(parents=True)
    assert figures_dir_for(str(served / "figures"), smoke=True) == str(served / "figures")
    monkeypatch.setenv(CHECKOUT_ENV, str(served))
    assert figures_dir_for(str(served / "figures"), smoke=True) == str(served / "outputs" / "smoke_figures")
    # any folder that is not a checkout's figures/ is used as given (tests write to tmp folders)
    assert figures_dir_for(str(tmp_path / "figs"), smoke=True) == str(tmp_path / "figs")


def test_every_notebook_routes_its_figures_through_the_smoke_guard():
    for source in discover():
        assert "figures_dir = figures_dir_for(figures_dir, smoke)" in source.read_text(), source.name
        assert "figures_dir" in notebook_parameters(source)


def test_is_checkout(tmp_path):
    assert checkout.is_checkout(REPO_ROOT) and not checkout.is_checkout(tmp_path)


# --- -p names -------------------------------------------------------------------------------------

def test_parameters_are_read_from_each_notebooks_parameters_cell():
    taken = {p.stem[:2]: notebook_parameters(p) for p in discover()}
    for names in taken.values():
        assert {"model_pair", "seed", "device", "smoke", "figures_dir", "artifacts_dir"} <= set(names)
    assert "n_eval" in taken["01"] and "n_eval" not in taken["02"]


def test_an_unknown_parameter_stops_before_anything_runs_naming_the_closest(tmp_path):
    with pytest.raises(ParameterError, match=r"^-p: no notebook of this run takes the parameter 'sede' "
                                             r"\(closest: seed, seeds\)"):
        run_all({"sede": 1, "seed": 1}, output_dir=tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir()), "nothing executed"
    # a name that only some notebooks take is fine; one none of the selected notebooks takes is not
    check_parameter_names({"n_eval": 5, "seed": 1}, discover())
    with pytest.raises(ParameterError, match="'n_eval'"):
        check_parameter_names({"n_eval": 5}, discover(only=["02"]))
    with pytest.raises(ParameterError, match=r"'qwerty'\. The notebooks take: "):
        check_parameter_names({"qwerty": 1}, discover())


def test_the_command_line_names_the_unknown_parameter(capsys):
    assert main(["-p", "sede", "1"]) == 2
    err = capsys.readouterr().err
    assert "FAILED: -p: no notebook of this run takes the parameter 'sede' (closest: seed, seeds)" in err


# --- Ctrl-C ---------------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def _running(pid: int) -> bool:
    """Whether a process is alive (a zombie, dead and waiting to be reaped, is not)."""
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(state) and not state.startswith("Z")


@pytest.mark.slow
def test_ctrl_c_prints_one_line_stops_the_kernel_and_exits_130(tmp_path):
    book = tmp_path / "nbs"
    book.mkdir()
    started = tmp_path / "started"
    (book / "01_sleeps.py").write_text(
        f'# %% tags=["parameters"]\nx = 1\n\n# %%\nimport pathlib, time\npathlib.Path({str(started)!r}).touch()\n'
        'time.sleep(120)\n')
    runner = subprocess.Popen(
        [sys.executable, "-m", "mechshift_utils.notebook.runner", "--notebook-dir", str(book),
         "--output-dir", str(tmp_path / "out")], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)  # a terminal's Ctrl-C: SIGINT to the runner's process group
    try:
        deadline = time.time() + 120
        while not started.exists():
            assert runner.poll() is None and time.time() < deadline, "the notebook never started"
            time.sleep(0.2)
        kernels = _children(runner.pid)
        assert kernels, "the kernel is the runner's child"
        os.killpg(runner.pid, signal.SIGINT)
        output, _ = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 130
    lines = output.strip().splitlines()
    assert len(lines) == 2 and lines[0] == "[mechshift] running 01_sleeps.py with {}", output
    assert lines[1] == ("[mechshift] interrupted in 01_sleeps.py; run the same command again to resume from the "
                        "last saved step")
    time.sleep(1)
    assert not [pid for pid in kernels if _running(pid)], "the kernel still runs"


def _descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


@pytest.mark.slow
def test_ctrl_c_with_notebooks_running_side_by_side(tmp_path):
    """--jobs 2: both notebooks' processes and kernels stop, and the runner prints one line naming both."""
    book = tmp_path / "nbs"
    book.mkdir()
    for name in ("01_left", "02_right"):
        flag = tmp_path / name
        (book / f"{name}.py").write_text(f"# %%\n# mechshift: after\nimport pathlib, time\n"
                                         f"pathlib.Path({str(flag)!r}).touch()\ntime.sleep(120)\n")
    runner = subprocess.Popen(
        [sys.executable, "-m", "mechshift_utils.notebook.runner", "--notebook-dir", str(book), "--jobs", "2",
         "--output-dir", str(tmp_path / "out")], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not ((tmp_path / "01_left").exists() and (tmp_path / "02_right").exists()):
            assert runner.poll() is None and time.time() < deadline, "the notebooks never started"
            time.sleep(0.2)
        below = _descendants(runner.pid)
        assert len(below) >= 4, "two notebook processes, each with its kernel"
        os.killpg(runner.pid, signal.SIGINT)
        output, _ = runner.communicate(timeout=90)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 130, output
    lines = output.strip().splitlines()
    assert lines[-1] == ("[mechshift] interrupted in 01_left.py, 02_right.py; run the same command again to resume "
                         "from the last saved step"), output
    assert not [line for line in lines if "Traceback" in line or "Error" in line], output
    time.sleep(1)
    assert not [pid for pid in below if _running(pid)], "a notebook process or kernel still runs"
