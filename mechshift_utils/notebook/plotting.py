"""Every figure goes to ``figures_dir`` as PNG and PDF, with the data it plots as a CSV beside it."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

MODEL_COLORS = {"arm": "#1f77b4", "mdm": "#d62728"}
MODEL_LABELS = {"arm": "ARM", "mdm": "MDM"}
# every model a seed has: the pair, the trained controls, step 0 of post-training, another seed's ARM
RUN_COLORS = {**MODEL_COLORS, "arm_continued": "#17becf", "mdm_causal": "#ff7f0e", "mdm_scratch": "#9467bd",
              "step0": "#8c564b", "arm_twin": "#7f7f7f"}
RUN_LABELS = {**MODEL_LABELS, "arm_continued": "ARM continued", "mdm_causal": "MDM, causal attention",
              "mdm_scratch": "MDM from scratch", "step0": "step 0 (ARM, full attention)", "arm_twin": "ARM, other seed"}


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


def save_table(data: pd.DataFrame, name: str, figures_dir) -> Path:
    """Write a table without a figure (``name``.csv) into ``figures_dir``; returns its path."""
    out = Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.csv"
    data.to_csv(path, index=False)
    return path


SUPPORTS, OPPOSES = "#1f77b4", "#d62728"  # edge colours of a circuit drawing


def draw_circuit(ax, graph, scores, circuit, title: str = "", max_edges: int = 80) -> "pd.DataFrame":
    """Layered drawing of a circuit: components by layer (bottom: input, top: logits), edges with
    width by |score| and colour by sign. Scores are noising effects (the metric's change when the edge
    carries its corrupted value): a negative score means the edge carries the answer (blue,
    :data:`SUPPORTS`), a positive one that it works against it (red, :data:`OPPOSES`).
    Returns the drawn edges as a table."""
    import torch

    from ..attribution.graph import component_of

    a = graph.arch
    rows = {"input": (0.0, 0.0), "logits": ((a.n_heads) / 2, 2 * a.n_layers + 1)}
    for layer in range(a.n_layers):
        for h in range(a.n_heads):
            rows[f"a{layer}.h{h}"] = (h, 2 * layer + 1)
        for g in range(a.n_kv_heads):
            rows.setdefault(f"a{layer}.kv{g}", (g * a.n_heads / a.n_kv_heads, 2 * layer + 1))
        rows[f"m{layer}"] = ((a.n_heads - 1) / 2, 2 * layer + 2)
    src, dst = circuit.nonzero(as_tuple=True)
    vals = scores[src, dst]
    keep = torch.argsort(vals.abs(), descending=True)[:max_edges]
    drawn = []
    top = float(vals.abs().max()) if len(vals) else 1.0
    for i in keep.tolist():
        s, d = graph.upstream[src[i]], component_of(graph.downstream[dst[i]])
        (x0, y0), (x1, y1) = rows[s], rows[d]
        v = float(vals[i])
        ax.plot([x0, x1], [y0, y1], color=OPPOSES if v > 0 else SUPPORTS, alpha=0.7,
                lw=0.4 + 3.5 * abs(v) / top, zorder=1)
        drawn.append({"src": s, "dst": graph.downstream[dst[i]], "score": v})
    used = {r["src"] for r in drawn} | {component_of(r["dst"]) for r in drawn}
    for name, (x, y) in rows.items():
        ax.scatter([x], [y], s=70 if name in used else 18, color="k" if name in used else "0.8", zorder=2)
        if name in used:
            ax.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_yticks([0] + [2 * l + 1.5 for l in range(a.n_layers)] + [2 * a.n_layers + 1],
                  ["input"] + [f"layer {l}" for l in range(a.n_layers)] + ["logits"], fontsize=7)
    ax.set_xticks([])
    ax.grid(False)
    ax.set_title(title, fontsize=9)
    return pd.DataFrame(drawn)


def circuit_legend(fig_or_ax, **kwargs):
    """The legend of :func:`draw_circuit`'s colours."""
    from matplotlib.lines import Line2D

    handles = [Line2D([0], [0], color=SUPPORTS, lw=2, label="carries the answer (patching it lowers the logit difference)"),
               Line2D([0], [0], color=OPPOSES, lw=2, label="works against it (patching it raises the logit difference)")]
    return fig_or_ax.legend(handles=handles, **kwargs)


def legend_below(fig, ax, fontsize=7, ncol=None, height=0.07) -> None:
    """One legend for the whole figure (the entries of ``ax``), in a band below the panels, where it
    cannot cover data; lays the figure out around it (call instead of ``fig.tight_layout()``)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.tight_layout(rect=(0, height, 1, 1))
    fig.legend(handles, labels, fontsize=fontsize, ncol=ncol or len(labels), loc="lower center",
               bbox_to_anchor=(0.5, 0.0), frameon=False)
