"""Where a run's time went, read from the executed notebooks (papermill records every cell's start and
duration) and the training runs' own timers.

``python -m mechshift_utils.notebook.timing [outputs/notebooks] [--training figures/01_training_time.csv]``
prints markdown: the run's span, how long 0, 1, 2, ... notebooks were running at once (the time a
core waited on the schedule), each notebook's wall time with the notebooks that ran beside it, and
each notebook's slowest cells. Nothing is estimated: every number is a difference of two recorded
timestamps or a recorded duration.
"""
from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

import pandas as pd

from ..core.validation import ParameterError


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _label(source: str, heading: str | None, width: int = 90) -> str:
    """What a cell does, in one line: the first line of the markdown cell above it (the notebooks are
    narrative: it says what the code below does), else the cell's first comment, else its first line."""
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    comment = next((line.lstrip("# ").strip() for line in lines if line.startswith("#")), None)
    text = heading or comment or (lines[0] if lines else "(empty)")
    return text if len(text) <= width else text[:width - 1] + "…"


def _executed(folder: Path) -> list[tuple[str, object]]:
    import nbformat

    found = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise ParameterError(f"folder: expected executed notebooks (NN_name.ipynb, written by run_all.sh) in "
                             f"{folder}, found none")
    return [(p.stem, nbformat.read(p, as_version=4)) for p in found]


def cell_times(folder) -> pd.DataFrame:
    """One row per executed code cell: notebook, cell (its index among the code cells, counted from 0),
    start, seconds, label (see :func:`_label`)."""
    rows = []
    for name, nb in _executed(Path(folder)):
        heading, i = None, -1
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                lines = [line.strip() for line in cell.source.splitlines() if line.strip()]
                heading = lines[0].lstrip("# ").strip() if lines else heading
                continue
            if cell.cell_type != "code":
                continue
            i += 1
            pm = cell.metadata.get("papermill", {})
            if pm.get("start_time") and pm.get("duration") is not None:
                rows.append({"notebook": name, "cell": i, "start": _time(pm["start_time"]),
                             "seconds": float(pm["duration"]), "label": _label(cell.source, heading)})
            heading = None  # a heading names the code cell right below it, not the ones after
    return pd.DataFrame(rows, columns=["notebook", "cell", "start", "seconds", "label"])


def notebook_times(folder, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per notebook: start and end (its first cell's start, its last cell's end) and seconds
    (from ``cells``, :func:`cell_times` of the folder, when given)."""
    cells = cell_times(folder) if cells is None else cells
    if cells.empty:
        raise ParameterError(f"folder: the notebooks in {folder} carry no cell timings (not run by papermill?)")
    cells = cells.assign(end=cells.start + pd.to_timedelta(cells.seconds, unit="s"))
    out = cells.groupby("notebook").agg(start=("start", "min"), end=("end", "max")).reset_index()
    return out.assign(seconds=(out.end - out.start).dt.total_seconds())


def concurrency(times: pd.DataFrame) -> pd.DataFrame:
    """Seconds of the run's span during which exactly n notebooks were running, for every n seen."""
    events = sorted([(t, +1) for t in times.start] + [(t, -1) for t in times.end])
    spans: dict[int, float] = {}
    running, last = 0, None
    for t, step in events:
        if last is not None and t > last:
            spans[running] = spans.get(running, 0.0) + (t - last).total_seconds()
        running, last = running + step, t
    return pd.DataFrame(sorted(spans.items()), columns=["running", "seconds"])


def beside(times: pd.DataFrame) -> dict[str, list[str]]:
    """For every notebook, the notebooks whose run overlapped its own."""
    out = {}
    for a in times.itertuples():
        out[a.notebook] = [b.notebook for b in times.itertuples()
                           if b.notebook != a.notebook and b.start < a.end and a.start < b.end]
    return out


def _short(name: str) -> str:
    return name.split("_", 1)[0]


def report(folder, training_csv=None, top: int = 3) -> str:
    """The markdown report (see the module docstring)."""
    cells = cell_times(folder)
    times = notebook_times(folder, cells)
    span = (times.end.max() - times.start.min()).total_seconds()
    lines = [f"**Notebooks, first cell to last: {span / 60:.1f} min** ({len(times)} notebooks)", ""]
    conc = concurrency(times)
    lines += ["| notebooks running at once | minutes |", "|---|---|"]
    lines += [f"| {int(r.running)}{' (between notebooks: conversion, kernel start)' if r.running == 0 else ''} "
              f"| {r.seconds / 60:.1f} |" for r in conc.itertuples()]
    lines += ["", "| notebook | wall time | beside | slowest cells |", "|---|---|---|---|"]
    overlaps = beside(times)
    for t in times.itertuples():
        slow = cells[cells.notebook == t.notebook].nlargest(top, "seconds")
        pieces = "; ".join(f"cell {r.cell}, {r.label}: {r.seconds:.0f} s" for r in slow.itertuples())
        others = ", ".join(_short(o) for o in overlaps[t.notebook]) or "alone"
        lines.append(f"| {t.notebook} | {t.seconds:.0f} s | {others} | {pieces} |")
    if training_csv is not None and Path(training_csv).is_file():
        runs = pd.read_csv(training_csv)
        by = runs.groupby("run").seconds.agg(["count", "min", "max"])
        lines += ["", f"**Training**: {len(runs)} runs, {runs.seconds.sum() / 60:.1f} min of one core in all "
                      f"(each run's own timer, `{Path(training_csv).name}`):", "",
                  "| run | runs | seconds each |", "|---|---|---|"]
        lines += [f"| {name} | {int(r['count'])} | {r['min']:.0f}-{r['max']:.0f} |" for name, r in by.iterrows()]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", default="outputs/notebooks", help="executed notebooks (run_all.sh's output)")
    ap.add_argument("--training", default="figures/01_training_time.csv",
                    help="the training runs' timers (skipped when the file is absent)")
    ap.add_argument("--top", type=int, default=3, help="slowest cells shown per notebook")
    args = ap.parse_args(argv)
    try:
        print(report(args.folder, args.training, args.top))
    except ParameterError as err:
        print(f"error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
