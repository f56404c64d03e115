# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Structural comparison: does the MDM keep the ARM's circuit?
#
# The paper's claims 1 and 2:
#
# 1. **Prefix-dominant** tasks (IOI, Greater-Than): the MDM keeps the ARM's circuit
#    (high overlap of top edges, similar depth profile).
# 2. **Globally constrained** tasks (Countdown, Infilling): the MDM leaves the inherited
#    pathways (low overlap) and moves computation into earlier layers.
#
# We measure both on the EAP-IG attributions of notebook 02 (same pools, same graph,
# same code for both models): the Jaccard overlap of the two top-K edge sets over a
# sweep of K; component importance s(v), the sum of |score| over v's circuit edges;
# the share of importance per layer (depth profile); and the early-layer share with
# bootstrap confidence intervals over examples. The verdicts at the end are computed
# from these numbers with thresholds stated up front.

# %% tags=["parameters"]
model_pair = "embedded"
seed = 0
device = "auto"
dtype = "auto"  # real pairs: "auto" (bfloat16 on a GPU, float32 on the CPU), "float32", "bfloat16"
device_map = ""  # real pairs: "pair" puts the ARM and the MDM on two GPUs
smoke = False
artifacts_dir = "../artifacts"
figures_dir = "../figures"
ig_steps = 8  # must match notebook 02 (its cached attributions are reused)
pool_limit = 300
batch_size = 0  # 0: 64 for the embedded pair; for a real pair the largest that fits in free memory
k_fraction = 0.1  # circuit size for the embedded graph, as a fraction of all edges
k_edges = 0  # a fixed K when positive; 0: k_fraction of all edges (embedded), 1000 (real pairs)
early_layers = 0  # layers counted as "early"; 0: the first half
n_boot = 200  # bootstrap resamples over examples
overlap_threshold = 0.5  # claim 1 "high overlap": mean Jaccard at K on prefix-dominant tasks at least this
profile_threshold = 0.2  # claim 1 "similar depth profile": total-variation distance at most this

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from mechshift_utils import tasks
from mechshift_utils.analysis.circuits import k_sweep
from mechshift_utils.analysis.comparison import (bootstrap_early_share, bootstrap_early_share_difference,
                                                 early_layer_count, importance_and_profiles, jaccard, jaccard_over_k,
                                                 profile_distance)
from mechshift_utils.analysis.verdicts import regime_word, structural_verdicts
from mechshift_utils.attribution.tracing import circuit_size, trace_pair
from mechshift_utils.core.validation import check_positive_int
from mechshift_utils.notebook import plotting
from mechshift_utils.notebook.params import NotebookParams, figures_dir_for
from mechshift_utils.notebook.pipeline import prepare_pair

params = NotebookParams(model_pair, seed, device, smoke, dtype, device_map).validated()
figures_dir = figures_dir_for(figures_dir, smoke)  # smoke runs leave the committed figures alone
if smoke:
    pool_limit, ig_steps, n_boot = min(pool_limit, 8), min(ig_steps, 2), min(n_boot, 10)
for name, value in (("ig_steps", ig_steps), ("pool_limit", pool_limit), ("n_boot", n_boot)):
    check_positive_int(name, value)
plotting.use_style()
pair, run = prepare_pair(params, artifacts_dir)
order = list(tasks.TASK_NAMES)
regime = {t: tasks.get_task(t).regime for t in order}
pools, att, graph = trace_pair(pair, run.run_dir, order, pool_limit, ig_steps, batch_size,
                               fallback_seed=seed if smoke else None)
n_layers = graph.arch.n_layers
n_early = early_layer_count(n_layers, early_layers)
K = circuit_size(graph, k_edges, k_fraction, params.model_pair)
print(f"{graph.n_edges} edges; circuits of K = {K}; early layers = the first {n_early} of {n_layers}")

# %% [markdown]
# ## Overlap of the top-K edge sets

# %%
overlap = pd.DataFrame([{"task": task, "regime": regime[task], **row} for task in order
                        for row in jaccard_over_k(graph, att[("arm", task)].edge_scores, att[("mdm", task)].edge_scores,
                                                  k_sweep(graph.n_edges))])
fig, ax = plt.subplots(figsize=(6.5, 3.6))
styles = {tasks.PREFIX_DOMINANT: "-", tasks.GLOBALLY_CONSTRAINED: "--"}
for task in order:
    sub = overlap[overlap.task == task]
    ax.plot(sub.fraction, sub.jaccard, marker="o", ms=3, ls=styles[regime[task]], label=f"{task} ({regime[task]})")
ax.axvline(K / graph.n_edges, color="0.5", lw=0.8, ls=":")
ax.set(xscale="log", xlabel="fraction of edges in the circuit (K / all)", ylabel="Jaccard(ARM, MDM)",
       ylim=(0, 1.02), title="Overlap of ARM and MDM top-K edges")
ax.legend(fontsize=7)
plotting.save_figure(fig, overlap, "03_jaccard_vs_k", figures_dir)
plt.show()

# %% [markdown]
# ## Component importance and depth profile
#
# s(v) sums |score| over the circuit's edges that touch v (its outgoing edges and the
# edges into its q/k/v or MLP input), normalised per model and task to shares.

# %%
importance, profiles = importance_and_profiles(
    graph, {(task, role): att[(role, task)].edge_scores for task in order for role in ("arm", "mdm")}, K, regime)

components = ["input"] + [n for n in graph.upstream[1:]] + ["logits"]
heat = importance.pivot_table(index="component", columns=["task", "model"], values="share").reindex(components)
heat = heat.reindex(columns=pd.MultiIndex.from_product([order, ["arm", "mdm"]])).fillna(0.0)
fig, ax = plt.subplots(figsize=(7.5, 0.22 * len(components) + 1.5))
im = ax.imshow(heat.to_numpy(), aspect="auto", cmap="viridis")
ax.set_yticks(range(len(components)), components, fontsize=7)
ax.set_xticks(range(heat.shape[1]), [f"{t}\n{plotting.MODEL_LABELS[m]}" for t, m in heat.columns], fontsize=7)
ax.grid(False)
fig.colorbar(im, ax=ax, label="share of circuit importance")
ax.set_title(f"Component importance in the top-{K} circuit")
plotting.save_figure(fig, importance, "03_component_importance", figures_dir)
plt.show()
display(importance[importance["rank"] <= 5].pivot_table(index=["task", "rank"], columns="model",
                                                         values="component", aggfunc="first"))

fig, axes = plt.subplots(1, len(order), figsize=(3.2 * len(order), 3.2), sharey=True)
for ax, task in zip(axes, order):
    for role in ("arm", "mdm"):
        sub = profiles[(profiles.task == task) & (profiles.model == role)]
        ax.plot(sub.layer, sub.share, marker="o", color=plotting.MODEL_COLORS[role], label=plotting.MODEL_LABELS[role])
    ax.axvspan(-0.5, n_early - 0.5, color="0.9", zorder=0)
    ax.set(title=f"{task}\n({regime[task]})", xlabel="layer", xticks=range(n_layers))
axes[0].set_ylabel("share of importance")
axes[0].legend(fontsize=8)
fig.suptitle("Depth profile of circuit importance (shaded: early layers)", y=1.04)
plotting.save_figure(fig, profiles, "03_depth_profile", figures_dir)
plt.show()

# %% [markdown]
# ## Early-layer share with bootstrap intervals
#
# Each resample draws examples with replacement (jointly for both models, which were
# traced on the same examples), averages their edge scores, takes the top-K edges anew
# and recomputes the share of importance in the early layers.

# %%
rows = []
for task in order:
    for role in ("arm", "mdm"):
        res = att[(role, task)]
        rows.append({"task": task, "regime": regime[task], "model": role,
                     **bootstrap_early_share(graph, res.per_example, K, n_early, n_boot, seed)})
early = pd.DataFrame(rows)
diffs = pd.DataFrame([{"task": t, "regime": regime[t], **bootstrap_early_share_difference(
    graph, att[("arm", t)].per_example, att[("mdm", t)].per_example, K, n_early, n_boot, seed)} for t in order])
display(early, diffs)

fig, ax = plt.subplots(figsize=(6.5, 3.4))
for k_role, role in enumerate(("arm", "mdm")):
    sub = early[early.model == role].set_index("task").loc[order]
    x = np.arange(len(order)) + (k_role - 0.5) * 0.35
    ax.bar(x, sub.early_share, 0.35, color=plotting.MODEL_COLORS[role], label=plotting.MODEL_LABELS[role])
    # the point estimate re-selects the top K on all examples, so it can sit just outside the interval
    ax.errorbar(x, sub.early_share, yerr=[(sub.early_share - sub.ci_low).clip(lower=0),
                                          (sub.ci_high - sub.early_share).clip(lower=0)],
                fmt="none", color="k", capsize=3)
ax.set_xticks(range(len(order)), [f"{t}\n({regime[t]})" for t in order], fontsize=8)
ax.set(ylabel=f"share in layers < {n_early}", ylim=(0, 1), title="Early-layer share of circuit importance (95% CI)")
ax.legend(fontsize=8)
plotting.save_figure(fig, early.merge(diffs.rename(columns={"ci_low": "diff_ci_low", "ci_high": "diff_ci_high"}),
                                      on=["task", "regime"]), "03_early_layer_share", figures_dir)
plt.show()

# %% [markdown]
# ## Circuit diagrams
#
# The top edges of each circuit, layer by layer; width by |score|, red edges raise the
# logit difference, blue ones lower it (at most 40 edges drawn per panel).

# %%
fig, axes = plt.subplots(2, len(order), figsize=(4.2 * len(order), 8))
drawn = []
for c, task in enumerate(order):
    for r, role in enumerate(("arm", "mdm")):
        res = att[(role, task)]
        table = plotting.draw_circuit(axes[r, c], graph, res.edge_scores, graph.top_edges(res.edge_scores, K),
                                      f"{task} · {plotting.MODEL_LABELS[role]}", max_edges=40)
        drawn.append(table.assign(task=task, model=role))
fig.tight_layout()
plotting.save_figure(fig, pd.concat(drawn, ignore_index=True), "03_circuit_diagrams", figures_dir)
plt.show()

# %% [markdown]
# ## Verdict per regime
#
# Operational form of the claims (`mechshift_utils.analysis.verdicts`; the thresholds are
# parameters of this notebook): claim 1 holds for a prefix-dominant task when Jaccard at
# K ≥ `overlap_threshold` and the depth profiles differ by at most `profile_threshold`
# (total variation). Claim 2 holds for a globally constrained task when its Jaccard is
# below the mean Jaccard of the prefix-dominant tasks **and** the MDM's early-layer share
# exceeds the ARM's with a bootstrap interval of the difference above zero.

# %%
at_k = pd.DataFrame([{"task": t, "regime": regime[t],
                      "jaccard": jaccard(graph.top_edges(att[("arm", t)].edge_scores, K),
                                         graph.top_edges(att[("mdm", t)].edge_scores, K)),
                      "profile_distance": profile_distance(
                          profiles[(profiles.task == t) & (profiles.model == "arm")].set_index("layer").share,
                          profiles[(profiles.task == t) & (profiles.model == "mdm")].set_index("layer").share)}
                     for t in order]).merge(diffs, on=["task", "regime"])
verdicts = structural_verdicts(at_k, overlap_threshold, profile_threshold)
verdicts.to_csv(f"{figures_dir}/03_verdicts.csv", index=False)
display(verdicts)
for reg in (tasks.PREFIX_DOMINANT, tasks.GLOBALLY_CONSTRAINED):
    sub = verdicts[verdicts.regime == reg]
    print(f"{reg}: {sub.claim.iloc[0]} {regime_word(sub.holds)} here "
          f"(Jaccard {', '.join(f'{t}={j:.2f}' for t, j in zip(sub.task, sub.jaccard))}; "
          f"MDM-ARM early share {', '.join(f'{t}={d:+.3f}' for t, d in zip(sub.task, sub.early_share_mdm_minus_arm))})")
