"""Run the notebooks headlessly: jupytext .py -> .ipynb -> papermill, in order.

``python -m mechshift_utils.notebook.runner [-p NAME VALUE ...] [--only 01 02] [--jobs N] [--output-dir DIR]``
(run_all.sh calls this). Stops at the first failing notebook, naming it and the cell.

* A notebook names the notebooks it needs in a line ``# mechshift: after 01 02`` (without one: every
  notebook before it). With ``--jobs N`` > 1, notebooks whose prerequisites are done run at the same
  time, each in its own process and kernel, their output lines prefixed with their number; a notebook
  that can run beside another one gets ``cores // N`` threads, one that runs alone keeps every core
  (fixed by the notebooks' prerequisites, not by timing, so a command always gives the same numbers).
  The thread count itself moves one computation at float precision: exact edge patching's scores
  differ by about 1e-6 relative between 1 and 2 threads (EAP-IG and every other figure are
  bit-identical), so ``--jobs 1`` and ``--jobs 2`` differ there (see README, ``--jobs``).

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
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..core.cpus import usable_cores
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
            notebook_dir: Path = NOTEBOOK_DIR, jobs: int = 1) -> list[Path]:
    """Execute the notebooks, each with the ``parameters`` its parameters cell takes: in order with
    ``jobs=1``; with ``jobs`` > 1, up to that many at once as their prerequisites allow (see the module
    docstring). Unknown names stop the run before anything executes (ParameterError). Returns the
    executed notebooks in the notebooks' order."""
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ParameterError(f"--jobs: expected a positive integer, got {jobs!r}")
    sources = discover(notebook_dir, only)
    taken = check_parameter_names(parameters, sources)
    prerequisites = notebook_prerequisites(sources, discover(notebook_dir))
    given = {source: {k: v for k, v in parameters.items() if k in taken[source]} for source in sources}
    runnable = []
    for source in sources:
        if embedded_only(source) and given[source].get("model_pair", "embedded") != "embedded":
            print(f"[mechshift] skipping {source.name}: it needs the embedded pair's post-training "
                  f"checkpoints (a real pair has none)", flush=True)
            continue
        runnable.append(source)
    with kernel_environment(REPO_ROOT):
        if jobs > 1 and len(runnable) > 1:
            # a skipped notebook's own prerequisites stay (the sets are transitive)
            prerequisites = {s: prerequisites[s] & set(runnable) for s in runnable}
            return _run_concurrently(runnable, prerequisites, given, Path(output_dir), Path(notebook_dir), jobs)
        done = []
        for source in runnable:
            start = time.perf_counter()
            print(f"[mechshift] running {source.name} with {given[source]}", flush=True)
            try:
                done.append(run_notebook(source, output_dir, given[source]))
            except KeyboardInterrupt:
                raise Interrupted(source.name) from None
            print(f"[mechshift] {source.name} done in {time.perf_counter() - start:.0f} s -> {done[-1]}", flush=True)
    return done


EMBEDDED_ONLY = "# mechshift: embedded pair only"
AFTER = "# mechshift: after"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
CHILD_PARAMETERS = "MECHSHIFT_RUNNER_PARAMETERS"  # the parameters a notebook's own process is given (JSON)


def declared_after(source: Path) -> list[str] | None:
    """The notebook numbers named in the notebook's ``# mechshift: after NN ...`` line (None without one)."""
    for line in Path(source).read_text().splitlines():
        if line.startswith(AFTER):
            return line[len(AFTER):].split("(")[0].split()  # words in parentheses are a comment
    return None


def notebook_prerequisites(sources: list[Path], every: list[Path] | None = None) -> dict[Path, set[Path]]:
    """Each notebook's prerequisites among ``sources``, followed through notebooks left out of the run:
    what its ``after`` line names, or every notebook before it when it has none. ``every``: all the
    notebooks of the folder (``sources`` by default), to check the names and follow the chains."""
    every = list(every or sources)
    by_number = {p.name[:2]: p for p in every}
    direct = {}
    for i, source in enumerate(every):
        named = declared_after(source)
        if named is None:
            direct[source] = set(every[:i])
            continue
        wrong = [n for n in named if n not in by_number or n >= source.name[:2]]
        if wrong:
            raise NotebookFailed(f"{source.name}: its line '{AFTER} ...' names {wrong}; expected the numbers of "
                                 f"notebooks before it ({sorted(n for n in by_number if n < source.name[:2])})")
        direct[source] = {by_number[n] for n in named}
    ancestors: dict[Path, set[Path]] = {}
    for source in every:  # in order: a prerequisite's ancestors are known before it is used
        ancestors[source] = set().union(*[{d} | ancestors[d] for d in direct[source]]) if direct[source] else set()
    chosen = set(sources)
    return {s: ancestors[s] & chosen for s in sources}


def threads_per_notebook(sources: list[Path], prerequisites: dict[Path, set[Path]], jobs: int,
                         cores: int | None = None) -> dict[Path, int | None]:
    """Intra-op threads for each notebook of a run with ``jobs`` at once: ``cores // jobs`` (at least 1)
    for a notebook that can run beside another (neither needs the other), None (every core, the
    default) for one that always runs alone. Fixed by the prerequisites, so the same for every run."""
    cores = cores or usable_cores()
    alone = {s for s in sources
             if all(o is s or o in prerequisites[s] or s in prerequisites[o] for o in sources)}
    return {s: None if s in alone or jobs == 1 else max(1, cores // jobs) for s in sources}


def default_jobs(parameters: dict) -> int:
    """Notebooks at once when ``--jobs`` is not given: one per core (at most 4) for the embedded pair;
    one for a real pair, whose models may fill the memory of one process."""
    if parameters.get("model_pair", "embedded") != "embedded":
        return 1
    return max(1, min(usable_cores(), 4))


class _Child:
    """One notebook executing in its own process (``runner --child``), its output relayed line by line."""

    _print_lock = threading.Lock()

    def __init__(self, source: Path, parameters: dict, output_dir: Path, notebook_dir: Path, threads: int | None):
        self.source = source
        self.tag = f"[{source.name[:2]}]"
        self.failure: str | None = None
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{CHILD_PARAMETERS: json.dumps(parameters)})
        if threads is not None:
            env.update({v: str(threads) for v in THREAD_VARIABLES})
        command = [sys.executable, "-m", "mechshift_utils.notebook.runner", "--child", "--only", source.stem,
                   "--output-dir", str(output_dir), "--notebook-dir", str(notebook_dir)]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, bufsize=1)
        self.reader = threading.Thread(target=self._relay, daemon=True)
        self.reader.start()

    def _relay(self) -> None:
        for line in self.process.stdout:
            line = line.rstrip("\n")
            if line.startswith("[mechshift] FAILED: "):
                self.failure = line[len("[mechshift] FAILED: "):]
            elif self.failure is not None:
                self.failure += "\n" + line  # the failure's further lines (the partly executed notebook)
            with self._print_lock:
                print(f"{self.tag} {line}", flush=True)

    def finished(self) -> int | None:
        code = self.process.poll()
        if code is not None:
            self.reader.join()
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # the child stops its kernel and exits


def _run_concurrently(sources: list[Path], prerequisites: dict[Path, set[Path]], given: dict[Path, dict],
                      output_dir: Path, notebook_dir: Path, jobs: int) -> list[Path]:
    threads = threads_per_notebook(sources, prerequisites, jobs)
    waiting, running, done, failed, stopped = list(sources), [], set(), [], []
    try:
        while waiting or running:
            for child in [c for c in running if c.finished() is not None]:
                running.remove(child)
                code = child.process.returncode
                if code == 0:
                    done.add(child.source)
                elif code == 130:  # stopped by a Ctrl-C that reached it first
                    stopped.append(child)
                    raise KeyboardInterrupt
                else:
                    failed.append(child.failure or f"notebook {child.source.name} stopped with exit code {code}")
            ready = [s for s in waiting if prerequisites[s] <= done] if not failed else []
            for source in ready[:max(0, jobs - len(running))]:
                waiting.remove(source)
                note = f"{threads[source]} thread(s)" if threads[source] else "every core"
                print(f"[mechshift] starting {source.name} in its own process ({note})", flush=True)
                running.append(_Child(source, given[source], output_dir, notebook_dir, threads[source]))
            if failed and not running:
                raise NotebookFailed("; ".join(failed))
            if not running and waiting:  # nothing can start: a prerequisite was not run
                raise NotebookFailed(f"cannot run {[s.name for s in waiting]}: a prerequisite did not run")
            time.sleep(0.2)
    except KeyboardInterrupt:
        # a terminal's Ctrl-C reaches every process of the group: the children stop their kernels on their
        # own; one that is still running after a moment (only the runner was signalled) is told to
        deadline = time.time() + 2
        while time.time() < deadline and any(c.process.poll() is None for c in running):
            time.sleep(0.05)
        for child in running:
            child.stop()
        for child in running:
            try:
                child.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.process.kill()
            child.reader.join(timeout=5)
        names = sorted(c.source.name for c in stopped + running)
        raise Interrupted(", ".join(names) or "the run") from None
    return [output_dir / f"{s.stem}.ipynb" for s in sources]


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
    parser.add_argument("--jobs", type=int, default=0,
                        help="notebooks run at once as their prerequisites allow (default 0: one per core, at most "
                             "4, for the embedded pair; 1 for a real pair); 1 runs them one after another")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                        help="where the executed notebooks go (default: outputs/notebooks)")
    parser.add_argument("--notebook-dir", type=Path, default=NOTEBOOK_DIR, help=argparse.SUPPRESS)  # tests
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one notebook of a --jobs run
    args = parser.parse_args(argv)
    parameters = {name: _parse_value(value) for name, value in args.parameter}
    if args.child:
        parameters = json.loads(os.environ.get(CHILD_PARAMETERS, "{}"))
    previous = signal.signal(signal.SIGINT, _on_interrupt)
    try:
        check_checkout(os.environ.get(CHECKOUT_ENV) or REPO_ROOT)
        if args.jobs < 0:
            raise ParameterError(f"--jobs: expected a positive integer (0: the default), got {args.jobs}")
        jobs = 1 if args.child else (args.jobs or default_jobs(parameters))
        run_all(parameters, args.output_dir, args.only, args.notebook_dir, jobs)
    except (WrongCheckout, ParameterError) as err:
        print(f"[mechshift] FAILED: {err}", file=sys.stderr)
        return 2
    except NotebookFailed as err:
        print(f"[mechshift] FAILED: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        if args.child:  # the parent says it, once for every notebook
            _silence_stderr()
            return 130
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
