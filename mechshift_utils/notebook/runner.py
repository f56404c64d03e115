"""Run the notebooks headlessly: jupytext .py -> .ipynb -> papermill, in order.

``python -m mechshift_utils.notebook.runner [-p NAME VALUE ...] [--only 01 02] [--output-dir DIR]``
(run_all.sh calls this). Stops at the first failing notebook, naming it and the cell.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
DEFAULT_OUTPUT_DIR = REPO_ROOT / "outputs" / "notebooks"


class NotebookFailed(RuntimeError):
    pass


def discover(notebook_dir: Path = NOTEBOOK_DIR, only: list[str] | None = None) -> list[Path]:
    """The numbered jupytext notebooks (NN_name.py) in order; ``only`` keeps those whose name starts so."""
    found = sorted(p for p in Path(notebook_dir).glob("[0-9][0-9]_*.py"))
    if only:
        found = [p for p in found if any(p.name.startswith(o) for o in only)]
        if not found:
            raise NotebookFailed(f"--only: no notebook in {notebook_dir} starts with any of {only}")
    return found


def to_ipynb(source: Path, target: Path) -> Path:
    import jupytext

    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    target.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(notebook, target, fmt="ipynb")
    return target


def run_notebook(source: Path, output_dir: Path, parameters: dict) -> Path:
    import papermill as pm

    output_dir = Path(output_dir)
    unexecuted = to_ipynb(source, output_dir / ".unexecuted" / f"{source.stem}.ipynb")
    executed = output_dir / f"{source.stem}.ipynb"
    # The kernel must be this interpreter: put its folder first on PATH for the 'python3' kernelspec.
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    try:
        pm.execute_notebook(str(unexecuted), str(executed), parameters=parameters, kernel_name="python3",
                            cwd=str(source.parent), progress_bar=False, log_output=True)
    except pm.PapermillExecutionError as err:
        raise NotebookFailed(f"notebook {source.name} failed in cell {err.cell_index} "
                             f"(execution count {err.exec_count}): {err.ename}: {err.evalue}\n"
                             f"the partly executed notebook is {executed}") from None
    return executed


def run_all(parameters: dict, output_dir: Path = DEFAULT_OUTPUT_DIR, only: list[str] | None = None,
            notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    done = []
    for source in discover(notebook_dir, only):
        start = time.perf_counter()
        print(f"[mechshift] running {source.name} with {parameters}", flush=True)
        done.append(run_notebook(source, output_dir, parameters))
        print(f"[mechshift] {source.name} done in {time.perf_counter() - start:.0f} s -> {done[-1]}", flush=True)
    return done


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_all.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a notebook parameter, e.g. -p model_pair embedded -p smoke true -p seed 1")
    parser.add_argument("--only", nargs="+", help="run only notebooks whose name starts with these, e.g. 01")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                        help="where the executed notebooks go (default: outputs/notebooks)")
    args = parser.parse_args(argv)
    parameters = {name: _parse_value(value) for name, value in args.parameter}
    try:
        run_all(parameters, args.output_dir, args.only)
    except NotebookFailed as err:
        print(f"[mechshift] FAILED: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
