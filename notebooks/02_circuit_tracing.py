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
# # 02 · Circuit tracing with EAP-IG (nnsight)
#
# The paper finds circuits with EAP-IG (Hanna et al. 2024): every edge u → v of the
# computation graph gets the score (a_u(corrupted) − a_u(clean)) · ∂m/∂(input of v),
# the gradient averaged along the straight line from the corrupted to the clean input
# embeddings. It estimates the *noising* effect: how much the metric m (logit
# difference of correct vs counterfactual answer at the slot) moves when u's
# contribution to v comes from the corrupted run.
#
# Graph (as the EAP-IG reference): upstream nodes `input`, every head `a{l}.h{h}`,
# every MLP `m{l}`; downstream nodes each head's separate **q, k, v inputs**, every MLP
# and the `logits`. Everything runs through `mechshift_utils.attribution` on the plain
# transformers models wrapped by nnsight, the same code for the ARM and the MDM (and
# for Llama/Qwen2 modules). Before trusting it on the comparison, this notebook checks
# it against exact activation patching and the completeness of integrated gradients,
# then measures how faithful the top-K circuits are.

# %% tags=["parameters"]
model_pair = "embedded"
seed = 0
device = "auto"
dtype = "auto"  # real pairs: "auto" (bfloat16 on a GPU, float32 on the CPU), "float32", "bfloat16"
device_map = ""  # real pairs: "pair" puts the ARM and the MDM on two GPUs
smoke = False
artifacts_dir = "../artifacts"
figures_dir = "../figures"
ig_steps = 8  # integrated-gradient steps of EAP-IG
pool_limit = 300  # examples per task from the common-correct pool
n_edge_validation = 16  # examples per task for the exact edge-patching check (one pass per edge)
n_completeness = 32  # examples per task for the completeness sweep over ig_steps
batch_size = 0  # 0: 64 for the embedded pair; for a real pair the largest that fits in free memory

# %%
import matplotlib.pyplot as plt
from tqdm import tqdm
import pandas as pd
import torch
from IPython.display import display

from mechshift_utils import tasks
from mechshift_utils.analysis.circuits import curve_area, faithfulness_curve, k_sweep
from mechshift_utils.analysis.stats import spearman
from mechshift_utils.attribution import attribute
from mechshift_utils.attribution.tracing import pool_data, resolve_batch_size, traced
from mechshift_utils.core.validation import check_positive_int
from mechshift_utils.notebook import plotting
from mechshift_utils.notebook.params import NotebookParams, figures_dir_for
from mechshift_utils.notebook.pipeline import prepare_pair

params = NotebookParams(model_pair, seed, device, smoke, dtype, device_map).validated()
figures_dir = figures_dir_for(figures_dir, smoke)  # smoke runs leave the committed figures alone
if smoke:
    pool_limit, n_edge_validation, n_completeness, ig_steps = min(pool_limit, 8), 2, 4, min(ig_steps, 2)
for name, value in (("ig_steps", ig_steps), ("pool_limit", pool_limit),
                    ("n_edge_validation", n_edge_validation), ("n_completeness", n_completeness)):
    check_positive_int(name, value)
plotting.use_style()
pair, run = prepare_pair(params, artifacts_dir)
run_dir = run.run_dir
order = list(tasks.TASK_NAMES)
pools = {t: pool_data(run_dir, t, pair.tokenizer, pool_limit, seed if smoke else None, pair.mask_token_id)
         for t in order}
batch_size = resolve_batch_size(pair, batch_size, pools, ig_steps)
print({t: len(d) for t, d in pools.items()}, f"examples per task; batch size {batch_size}")

# %% [markdown]
# ## Validation 1: EAP-IG against exact activation patching
#
# On every pool we patch each node (its whole output from the corrupted run) for real
# and compare with EAP and EAP-IG on the same examples (the EAP-IG scores are the ones
# the later notebooks use, computed and cached here); on a small subset also every
# edge (only its contribution to one destination: one forward pass per edge). The
# target is a Spearman rank correlation ≥ 0.9 on node scores for every task.

# %%
import time

start = time.perf_counter()
rows, points, attributions = [], [], {}
for task in tqdm(order, desc="validation"):
    edges_subset = pools[task].subset(range(min(n_edge_validation, len(pools[task]))))
    for role, model in pair.items():
        kw = dict(batch_size=batch_size, shift=pair.shift, progress=False)
        exact = attribute(model, pools[task], method="exact", exact_edges=False, **kw)
        exact_edges = attribute(model, edges_subset, method="exact", **kw)
        attributions[(role, task)] = traced(pair, run_dir, role, task, pools[task], ig_steps=ig_steps,
                                            batch_size=batch_size)
        estimates = {"eap": attribute(model, pools[task], method="eap", **kw), "eap-ig": attributions[(role, task)]}
        valid = exact.graph.valid
        for method, res in estimates.items():
            res_edges = attribute(model, edges_subset, method=method, ig_steps=ig_steps, **kw)
            rows.append({"task": task, "model": role, "method": method,
                         "spearman_nodes": spearman(res.node_scores, exact.node_scores),
                         "pearson_nodes": float(torch.corrcoef(torch.stack([res.node_scores, exact.node_scores]))[0, 1]),
                         "spearman_edges": spearman(res_edges.edge_scores[valid], exact_edges.edge_scores[valid]),
                         "n_examples_nodes": len(pools[task]), "n_examples_edges": len(edges_subset)})
            for i, node in enumerate(exact.graph.upstream):
                points.append({"task": task, "model": role, "method": method, "node": node,
                               "exact": float(exact.node_scores[i]), "estimate": float(res.node_scores[i])})
validation = pd.DataFrame(rows)
points = pd.DataFrame(points)
print(f"validation took {time.perf_counter() - start:.0f} s")
display(validation.pivot_table(index=["task", "model"], columns="method",
                               values=["spearman_nodes", "pearson_nodes", "spearman_edges"]))

fig, axes = plt.subplots(2, len(order), figsize=(3.2 * len(order), 6.2))
for c, task in enumerate(order):
    for r, role in enumerate(("arm", "mdm")):
        ax = axes[r, c]
        sub = points[(points.task == task) & (points.model == role) & (points.method == "eap-ig")]
        ax.scatter(sub.exact, sub.estimate, s=14, color=plotting.MODEL_COLORS[role])
        lim = max(sub.exact.abs().max(), sub.estimate.abs().max()) * 1.1 or 1.0
        ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=0.8, ls="--")
        rho = validation[(validation.task == task) & (validation.model == role) &
                         (validation.method == "eap-ig")].spearman_nodes.iloc[0]
        ax.set_title(f"{task} · {plotting.MODEL_LABELS[role]}  ρ={rho:.2f}", fontsize=9)
        ax.set(xlabel="exact patching" if r else "", ylabel="EAP-IG" if c == 0 else "")
fig.suptitle("Node scores: EAP-IG vs exact activation patching", y=1.0)
fig.tight_layout()
plotting.save_figure(fig, points, "02_eapig_vs_exact_nodes", figures_dir)
plt.show()
validation.to_csv(f"{figures_dir}/02_validation_spearman.csv", index=False)

# %% [markdown]
# ## Validation 2: completeness of the integrated gradients
#
# Integrated gradients are complete: the attributions to the input add up to the
# change of the metric along the path. Here that is the `input` node's score, which
# must equal m(corrupted) − m(clean). The error shrinks with `ig_steps`; the default
# must be within 5%.

# %%
steps_grid = [1, 2, 4, 8, 16, 32] if not smoke else [1, 2]
rows = []
for task in tqdm(order, desc="completeness"):
    subset = pools[task].subset(range(min(n_completeness, len(pools[task]))))
    for role, model in pair.items():
        for steps in steps_grid:
            res = attribute(model, subset, method="eap-ig", ig_steps=steps, batch_size=batch_size,
                            shift=pair.shift, progress=False)
            target = float((res.metric_ablated - res.metric_clean).mean())
            rows.append({"task": task, "model": role, "ig_steps": steps, "input_attribution": float(res.node_scores[0]),
                         "target": target,
                         "relative_error": abs(float(res.node_scores[0]) - target) / abs(target)})
completeness = pd.DataFrame(rows)
print(f"completeness sweep took {time.perf_counter() - start:.0f} s in all so far")
display(completeness[completeness.ig_steps == ig_steps])
fig, ax = plt.subplots(figsize=(6, 3.6))
for (task, role), sub in completeness.groupby(["task", "model"], sort=False):
    ax.plot(sub.ig_steps, sub.relative_error, marker="o", color=plotting.MODEL_COLORS[role],
            ls="-" if role == "arm" else "--", alpha=0.8, label=f"{task} {plotting.MODEL_LABELS[role]}")
ax.axhline(0.05, color="k", lw=0.8, ls=":")
ax.axvline(ig_steps, color="0.5", lw=0.8)
ax.set(xscale="log", yscale="log", xlabel="ig_steps", ylabel="|Σ attribution − Δm| / |Δm|",
       title="EAP-IG completeness (dotted: 5%)")
ax.legend(fontsize=7, ncol=2)
plotting.save_figure(fig, completeness, "02_completeness_vs_ig_steps", figures_dir)
plt.show()

# %% [markdown]
# ## Faithfulness over K
#
# The circuit of size K is the K edges with the largest
# |score|; its faithfulness patches every other edge from the corrupted run and asks
# how much of the clean-vs-corrupted metric gap is left: (m(C) − m(corrupt)) /
# (m(full) − m(corrupt)). The embedded graph has few edges, so K is swept as a
# fraction of all of them (the paper's K = 1000 is for 7B graphs). The EAP-IG scores,
# examples and tables are saved under the run folder for notebooks 03-05.

# %%
curves = []
for task in tqdm(order, desc="faithfulness"):
    for role, model in pair.items():
        res = attributions[(role, task)]
        curve = faithfulness_curve(model, pools[task], res, k_sweep(res.graph.n_edges), batch_size=batch_size,
                                   shift=pair.shift, progress=False)
        curves.append(curve.assign(task=task, model=role))
curves = pd.concat(curves, ignore_index=True)
print(f"tracing and faithfulness took {time.perf_counter() - start:.0f} s in all so far")
area = (curves.groupby(["task", "model"], sort=False).apply(curve_area, include_groups=False)
        .rename("area_under_curve").reset_index())
display(area.pivot(index="task", columns="model", values="area_under_curve").loc[order])

fig, axes = plt.subplots(1, len(order), figsize=(3.2 * len(order), 3.4), sharey=True)
for ax, task in zip(axes, order):
    for role in ("arm", "mdm"):
        sub = curves[(curves.task == task) & (curves.model == role)]
        auc = area[(area.task == task) & (area.model == role)].area_under_curve.iloc[0]
        ax.plot(sub.fraction, sub.faithfulness, marker="o", ms=3, color=plotting.MODEL_COLORS[role],
                label=f"{plotting.MODEL_LABELS[role]} (AUC {auc:.2f})")
    ax.axhline(1, color="0.6", lw=0.8, ls="--")
    ax.set(xscale="log", title=task, xlabel="fraction of edges kept")
    ax.legend(fontsize=8)
axes[0].set_ylabel("faithfulness")
fig.suptitle(f"Faithfulness of top-K circuits ({res.graph.n_edges} edges in all)", y=1.02)
fig.tight_layout()
plotting.save_figure(fig, curves.merge(area, on=["task", "model"]), "02_faithfulness_curves", figures_dir)
plt.show()

# %% [markdown]
# ## Greater-Than with the probability difference
#
# For Greater-Than the reference also scores circuits by probability mass: P(years after
# the start year) − P(years from 02 to the start year) at the slot. Same engine, the
# metric a parameter: how much do the node rankings depend on the metric, and how
# faithful are the circuits under it?

# %%
from mechshift_utils.attribution.metrics import prob_diff

gt = pools["greater_than"]
rows, prob_curves = [], []
for role, model in pair.items():
    by_prob = attribute(model, gt, method="eap-ig", ig_steps=ig_steps, metric=prob_diff(gt), batch_size=batch_size,
                        shift=pair.shift, progress=False)
    curve = faithfulness_curve(model, gt, by_prob, k_sweep(by_prob.graph.n_edges), metric=prob_diff(gt),
                               batch_size=batch_size, shift=pair.shift, progress=False)
    prob_curves.append(curve.assign(model=role))
    rows.append({"model": role, "prob_diff_clean": float(by_prob.metric_clean.mean()),
                 "prob_diff_corrupted": float(by_prob.metric_ablated.mean()),
                 "spearman_nodes_vs_logit_diff": spearman(by_prob.node_scores,
                                                          attributions[(role, "greater_than")].node_scores),
                 "faithfulness_auc": curve_area(curve)})
prob_summary = pd.DataFrame(rows)
display(prob_summary)
prob_curves = pd.concat(prob_curves, ignore_index=True)
fig, ax = plt.subplots(figsize=(5, 3.4))
for role in ("arm", "mdm"):
    sub = prob_curves[prob_curves.model == role]
    ax.plot(sub.fraction, sub.faithfulness, marker="o", ms=3, color=plotting.MODEL_COLORS[role],
            label=plotting.MODEL_LABELS[role])
ax.axhline(1, color="0.6", lw=0.8, ls="--")
ax.set(xscale="log", xlabel="fraction of edges kept", ylabel="faithfulness (probability difference)",
       title="Greater-Than circuits under the probability metric")
ax.legend(fontsize=8)
plotting.save_figure(fig, prob_curves.merge(prob_summary, on="model"), "02_greater_than_prob_diff", figures_dir)
plt.show()

# %% [markdown]
# ## Numbers
#
# Computed from the tables above.

# %%
ok = validation[validation.method == "eap-ig"]
print(f"EAP-IG vs exact, node Spearman: min {ok.spearman_nodes.min():.3f} "
      f"(target >= 0.9 on every task: {'met' if (ok.spearman_nodes >= 0.9).all() else 'NOT met'})")
at_default = completeness[completeness.ig_steps == (ig_steps if ig_steps in steps_grid else steps_grid[-1])]
print(f"completeness error at ig_steps={ig_steps}: max {at_default.relative_error.max():.2%} "
      f"(target <= 5%: {'met' if (at_default.relative_error <= 0.05).all() else 'NOT met'})")
n_edges = next(iter(attributions.values())).graph.n_edges
print(f"graph: {n_edges} edges; faithfulness AUC per task and model:")
print(area.pivot(index="task", columns="model", values="area_under_curve").loc[order].round(3))
