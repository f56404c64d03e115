"""Every figure goes to ``figures_dir`` as PNG and PDF, with the data it plots as a CSV beside it."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg") if matplotlib.get_backend().lower() == "agg" else None
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

MODEL_COLORS = {"arm": "#1f77b4", "mdm": "#d62728"}
MODEL_LABELS = {"arm": "ARM", "mdm": "MDM"}


def use_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid")
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
                         "pdf.fonttype": 42})


def save_figure(fig, data: pd.DataFrame, name: str, figures_dir) -> dict[str, Path]:
    """Write ``name``.png, .pdf and .csv (the plotted data) into ``figures_dir``; returns the paths."""
    if not isinstance(data, pd.DataFrame) or data.empty:
        raise ValueError(f"data: expected the non-empty table that figure {name!r} plots")
    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{name}.{ext}" for ext in ("png", "pdf", "csv")}
    # Fixed metadata keeps re-runs with the same numbers byte-stable where the backends allow it.
    fig.savefig(paths["png"], metadata={"Software": None})
    fig.savefig(paths["pdf"], metadata={"CreationDate": None, "Producer": None, "Creator": None})
    data.to_csv(paths["csv"], index=False)
    return paths
