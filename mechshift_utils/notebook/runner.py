"""Run the notebooks headlessly: jupytext .py -> .ipynb -> papermill, in order.

``python -m mechshift_utils.notebook.runner [-p NAME VALUE ...] [--only 01 02] [--output-dir DIR]``
(run_all.sh calls this). Stops at the first failing notebook, naming it and the cell.

* Every kernel runs this checkout's code: the checkout is put first on the kernel's
  ``PYTHONPATH`` and named in ``$MECHSHIFT_CHECKOUT`` (checked again inside each notebook).
* Every ``-p`` name is checked against the notebooks' parameters cells before anything runs; each
  notebook is given the parameters it takes.
* Ctrl-C stops the kernel and prints one line; the same command resumes from what was saved.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from ..core.validation import ParameterError
from .checkout import CHECKOUT_ENV, WrongCheckout, check_checkout

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
DEFAULT_OUTPUT_DIR = REPO_ROOT / "outputs" / "notebooks"
INTERRUPTED = "interrupted{where}; run the same command again to resume from the last saved step"


class NotebookFailed(RuntimeError):
    pass


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while a notebook ran; ``notebook`` names it."""

    def __init__(self, notebook: str):
        super().__init__(notebook)
        self.notebook = notebook


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


# --- parameters ------------------------------------------------------------------------------------

def notebook_parameters(source: Path) -> list[str]:
    """The names the notebook's cell tagged "parameters" assigns (none when it has no such cell)."""
    import jupytext

    names = []
    for cell in jupytext.read(source).cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            for node in ast.parse(cell.source).body:
                targets = node.targets if isinstance(node, ast.Assign) else (
                    [node.target] if isinstance(node, ast.AnnAssign) else [])
                names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def check_parameter_names(parameters: dict, sources: list[Path]) -> dict[Path, list[str]]:
    """Stop when a ``-p`` name is taken by no notebook of the run, naming it and the closest valid names
    (a name that only some notebooks take is fine). Returns each notebook's parameter names."""
    taken = {source: notebook_parameters(source) for source in sources}
    valid = sorted({name for names in taken.values() for name in names})
    unknown = [name for name in parameters if name not in valid]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
            hints.append(f"{name!r} (closest: {', '.join(close)})" if close else repr(name))
        raise ParameterError(f"-p: no notebook of this run takes the parameter {'; '.join(hints)}. "
                             f"The notebooks take: {', '.join(valid)}")
    return taken


# --- the kernel ------------------------------------------------------------------------------------

@contextmanager
def kernel_environment(checkout: Path = REPO_ROOT):
    """Kernels started inside this block import ``mechshift_utils`` from ``checkout``, whatever the
    environment's editable install points at, and know which checkout they serve."""
    saved = {k: os.environ.get(k) for k in ("PATH", "PYTHONPATH", CHECKOUT_ENV)}
    # 'python3' kernelspec = this interpreter: its folder first on PATH
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), saved["PATH"] or ""])
    os.environ["PYTHONPATH"] = os.pathsep.join([str(checkout), *([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else [])])
    os.environ[CHECKOUT_ENV] = str(checkout)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_KERNELS: list = []  # kernel managers started by this process and not yet shut down


def _kernel_manager_class(log_path: Path):
    """An AsyncKernelManager whose kernel writes its own process output (start-up warnings, the
    tracebacks of a kernel stopped mid-cell) to ``log_path`` instead of the terminal; the notebook's
    outputs still come back through Jupyter's channels."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = log_path.open("w")
            kw.setdefault("stdout", log)
            kw.setdefault("stderr", log)
            _KERNELS.append(self)
            try:
                return await super().start_kernel(**kw)
            finally:
                log.close()  # the kernel holds its own copy of the file

    return LoggedKernelManager


def kill_kernels() -> None:
    """Stop every kernel this process started, at once and without a word (Ctrl-C)."""
    while _KERNELS:
        manager = _KERNELS.pop()
        process = getattr(getattr(manager, "provisioner", None), "process", None)
        if process is not None and process.poll() is None:
            try:
                os.killpg(os.getpgid(process.pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError, OSError):
                process.kill()


def run_notebook(source: Path, output_dir: Path, parameters: dict) -> Path:
    import papermill as pm
    from nbclient.exceptions import DeadKernelError

    output_dir = Path(output_dir)
    unexecuted = to_ipynb(source, output_dir / ".unexecuted" / f"{source.stem}.ipynb")
    executed = output_dir / f"{source.stem}.ipynb"
    log = output_dir / ".kernel-logs" / f"{source.stem}.log"
    try:
        pm.execute_notebook(str(unexecuted), str(executed), parameters=parameters, kernel_name="python3",
                            cwd=str(source.parent), progress_bar=False, log_output=True,
                            kernel_manager_class=_kernel_manager_class(log))
    except pm.PapermillExecutionError as err:
        raise NotebookFailed(f"notebook {source.name} failed in cell {err.cell_index} "
                             f"(execution count {err.exec_count}): {err.ename}: {err.evalue}\n"
                             f"the partly executed notebook is {executed}") from None
    except DeadKernelError as err:
        raise NotebookFailed(f"notebook {source.name}: the kernel died ({err}); its own output is in {log}") from None
    finally:
        _KERNELS.clear()  # nbclient shut it down (or kill_kernels did)
    return executed


def run_all(parameters: dict, output_dir: Path = DEFAULT_OUTPUT_DIR, only: list[str] | None = None,
            notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """Execute the notebooks in order, each with the ``parameters`` its parameters cell takes.
    Unknown names stop the run before anything executes (ParameterError)."""
    sources = discover(notebook_dir, only)
    taken = check_parameter_names(parameters, sources)
    done = []
    with kernel_environment(REPO_ROOT):
        for source in sources:
            given = {k: v for k, v in parameters.items() if k in taken[source]}
            if embedded_only(source) and given.get("model_pair", "embedded") != "embedded":
                print(f"[mechshift] skipping {source.name}: it needs the embedded pair's post-training "
                      f"checkpoints (a real pair has none)", flush=True)
                continue
            start = time.perf_counter()
            print(f"[mechshift] running {source.name} with {given}", flush=True)
            try:
                done.append(run_notebook(source, output_dir, given))
            except KeyboardInterrupt:
                raise Interrupted(source.name) from None
            print(f"[mechshift] {source.name} done in {time.perf_counter() - start:.0f} s -> {done[-1]}", flush=True)
    return done


EMBEDDED_ONLY = "# mechshift: embedded pair only"


def embedded_only(source: Path) -> bool:
    """Whether a notebook runs on the embedded pair only (a line ``# mechshift: embedded pair only``)."""
    return EMBEDDED_ONLY in Path(source).read_text().splitlines()


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def _on_interrupt(signum, frame):
    kill_kernels()  # before the exception unwinds through nbclient, so its clean-up finds no kernel to wait for
    raise KeyboardInterrupt


def _silence_stderr() -> None:
    """After the one-line message, nothing more: interpreter shutdown can still report the event loop
    and the channels that the interrupt left behind."""
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run_all.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a notebook parameter, e.g. -p model_pair embedded -p smoke true -p seed 1")
    parser.add_argument("--only", nargs="+", help="run only notebooks whose name starts with these, e.g. 01")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                        help="where the executed notebooks go (default: outputs/notebooks)")
    parser.add_argument("--notebook-dir", type=Path, default=NOTEBOOK_DIR, help=argparse.SUPPRESS)  # tests
    args = parser.parse_args(argv)
    parameters = {name: _parse_value(value) for name, value in args.parameter}
    previous = signal.signal(signal.SIGINT, _on_interrupt)
    try:
        check_checkout(os.environ.get(CHECKOUT_ENV) or REPO_ROOT)
        run_all(parameters, args.output_dir, args.only, args.notebook_dir)
    except (WrongCheckout, ParameterError) as err:
        print(f"[mechshift] FAILED: {err}", file=sys.stderr)
        return 2
    except NotebookFailed as err:
        print(f"[mechshift] FAILED: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        where = f" in {err.notebook}" if isinstance(err, Interrupted) else ""
        print(f"[mechshift] {INTERRUPTED.format(where=where)}", file=sys.stderr, flush=True)
        if argv is None:  # the command line, not a test calling main()
            _silence_stderr()
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
