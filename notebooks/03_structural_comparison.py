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
# An overlap or a depth shift means nothing on its own: circuits move when a model is
# trained further with its own objective, differ between two seeds of one recipe, and
# between two halves of one pool. So every number here is read against those references,
# measured the same way: the ARM trained further with next-token loss (`arm_continued`,
# **the null**: no change of objective, no mechanism shift), the split-half ceiling, the
# ARM of another seed, chance; and beside them the other controls (`mdm_causal`, `step0`,
# `mdm_scratch`) locate *which* factor of the recipe moves a circuit. The unit of evidence
# is a trained model: means over seeds, intervals from a hierarchical bootstrap (seeds,
# then examples).
#
# **The rule, stated before the numbers** (`mechshift_utils.analysis.scorecard`; thresholds
# are parameters of this notebook). The *excess* of a statistic is the MDM's change from its
# ARM minus `arm_continued`'s change from the same ARM. Claim 2 **holds** on a task when the
# excess points the claimed way (less overlap, a larger early-layer share) with its
# interval excluding 0 and at least `min_seed_fraction` of the seeds agreeing; it is
# **reversed** when that holds the other way, and otherwise **not distinguishable from the
# null**. Claim 1 **holds** on a task when the excess change (of overlap, and of the depth
# profile) stays below `equivalence_margin`; it **does not hold** when the MDM changes its
# circuit more than the null by more than that; otherwise it is **inconclusive**.

# %% tags=["parameters"]
# mechshift: after 02  (the notebooks this one needs; run_all.sh --jobs runs others beside it)
model_pair = "embedded"
seed = 0
seeds = 0  # trained models per recipe; 0: 3 for the embedded pair, 1 for a real pair
device = "auto"
dtype = "auto"  # real pairs: "auto" (bfloat16 on a GPU, float32 on the CPU), "float32", "bfloat16"
device_map = ""  # real pairs: "pair" puts the ARM and the MDM on two GPUs
workers = 0
smoke = False
artifacts_dir = "../artifacts"
figures_dir = "../figures"
ig_steps = 8  # must match notebook 02 (its cached attributions are reused)
ig_rule = "midpoint"  # EAP-IG's points, must match notebook 02 too
pool_limit = 300
batch_size = 0  # 0: 64 for the embedded pair; for a real pair the largest that fits in free memory
k_fraction = 0.1  # circuit size for the embedded graph, as a fraction of all edges
k_edges = 0  # a fixed K when positive; 0: k_fraction of all edges (embedded), 1000 (real pairs)
early_layers = 0  # layers counted as "early"; 0: the first half
n_boot = 200  # hierarchical bootstrap draws (seeds, then examples)
level = 0.95  # of the intervals
min_seed_fraction = 0.66  # share of seeds whose own excess must agree with a verdict (0.66: 2 of 3; 0.67 would ask for 3)
equivalence_margin = 0.1  # claim 1: how much more than the null the MDM's circuit may change
robustness_k_fractions = [0.05, 0.2]  # claim 4: the verdicts recomputed at these circuit sizes
n_resampled = 100  # claim 4: examples per task and seed in a second pool of fresh prompts (0: none)
resample_stream = 7919  # claim 4: the second pool's prompts come from held-out stream seed + this
mdm_decoding_steps = [1, 2]  # claim 4: MDM decoding budgets tried on the second pool beside the default (one slot per step)
n_exact = 64  # must match notebook 02: the examples its exact edge patching used (0: no exact verdicts)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from tqdm import tqdm

from mechshift_utils import tasks
from mechshift_utils.analysis.circuit_stats import CircuitStats, seed_statistics
from mechshift_utils.analysis.circuits import k_sweep, minimal_circuit
from mechshift_utils.analysis.comparison import early_layer_count
from mechshift_utils.analysis.scorecard import VerdictRule, scorecard_row, unreferenced_row
from mechshift_utils.analysis.seeds import seed_bootstrap
from mechshift_utils.attribution.regions import REGIONS, region_shares
from mechshift_utils.attribution.tracing import (circuit_size, exact_edges_traced, pool_data, resolve_batch_size,
                                                 trace_models)
from mechshift_utils.core.validation import check_non_negative_int, check_positive_int
from mechshift_utils.evaluation.accuracy import eval_sets, evaluate_models, pool_indices
from mechshift_utils.models.pair import Decoding
from mechshift_utils.notebook import plotting
from mechshift_utils.notebook.params import NotebookParams, figures_dir_for
from mechshift_utils.notebook.pipeline import prepare_experiment
from mechshift_utils.tasks import CORE_TASKS, task_names_for

params = NotebookParams(model_pair, seed, device, smoke, dtype, device_map, seeds, workers).validated()
figures_dir = figures_dir_for(figures_dir, smoke)  # smoke runs leave the committed figures alone
if smoke:
    pool_limit, ig_steps, n_boot, n_exact = min(pool_limit, 8), min(ig_steps, 2), min(n_boot, 10), min(n_exact, 4)
    n_resampled = min(n_resampled, 8)
for name, value in (("ig_steps", ig_steps), ("pool_limit", pool_limit), ("n_boot", n_boot),
                    ("resample_stream", resample_stream)):
    check_positive_int(name, value)
check_non_negative_int("n_exact", n_exact)
check_non_negative_int("n_resampled", n_resampled)
for b in mdm_decoding_steps:
    check_positive_int("mdm_decoding_steps (each)", b)
rule = VerdictRule(level, min_seed_fraction, equivalence_margin).validate()
plotting.use_style()
exp = prepare_experiment(params, artifacts_dir)
task_names = list(task_names_for(exp.tokenizer))
core = [t for t in CORE_TASKS if t in task_names]
regime = {t: tasks.get_task(t).regime for t in task_names}
pools = {s: {t: pool_data(exp.run_dir(s), t, exp.tokenizer, pool_limit, s if smoke else None, exp.pair.mask_token_id)
             for t in task_names} for s in exp.seeds}
batch_size = resolve_batch_size(exp.pair, batch_size, pools[exp.seeds[0]], ig_steps)
att = {}
for s in tqdm(exp.seeds, desc="attributions (cached by notebook 02)"):
    traced = trace_models(exp.models(s), exp.run_dir(s), pools[s], shift=exp.pair.shift, ig_steps=ig_steps,
                          batch_size=batch_size, embedded=exp.embedded, progress=False, ig_rule=ig_rule)
    att.update({(s, name, task): a for (name, task), a in traced.items()})
graph = next(iter(att.values())).graph
stats = CircuitStats(graph)
n_layers = graph.arch.n_layers
n_early = early_layer_count(n_layers, early_layers)
K = circuit_size(graph, k_edges, k_fraction, params.model_pair)
others = [n for n in exp.model_names() if n != "arm"]
print(f"{graph.n_edges} edges; K = {K}; early layers: the first {n_early} of {n_layers}; seeds {exp.seeds}; "
      f"compared with the ARM: {', '.join(others)}")


def per_example(s, task, names=None):
    return {n: att[(s, n, task)].per_example for n in (names or ["arm", *others])}


# %% [markdown]
# ## Overlap with the ARM's circuit, against its references
#
# Jaccard of each model's top-K edges with its ARM's, over K. References: **chance**
# (two random K-edge sets: K / (2N − K)), the **split-half ceiling** (the ARM's circuits from
# two random halves of its pool: what sampling alone costs), and **`arm_continued`**, the
# null. Lines: mean over seeds; bands: the range over seeds.

# %%
rows = []
for s in exp.seeds:
    for t in core:
        scores = per_example(s, t)
        names = list(scores)
        means = {n: x.mean(0) for n, x in scores.items()}
        x = scores["arm"]
        order = np.random.default_rng(s).permutation(len(x))
        halves = [x[order[: len(x) // 2]].mean(0), x[order[len(x) // 2: 2 * (len(x) // 2)]].mean(0)]
        for k in k_sweep(graph.n_edges):
            top = stats.top_edges(torch.stack([means[n] for n in names]), k)
            jac = stats.jaccard(top, top[names.index("arm")].expand_as(top))
            th = stats.top_edges(torch.stack(halves), k)
            for i, n in enumerate(names):
                if n != "arm":
                    rows.append({"seed": s, "task": t, "regime": regime[t], "k": k, "fraction": k / graph.n_edges,
                                 "model": n, "jaccard": float(jac[i])})
            rows.append({"seed": s, "task": t, "regime": regime[t], "k": k, "fraction": k / graph.n_edges,
                         "model": "split_half", "jaccard": float(stats.jaccard(th[:1], th[1:])[0])})
            rows.append({"seed": s, "task": t, "regime": regime[t], "k": k, "fraction": k / graph.n_edges,
                         "model": "chance", "jaccard": stats.chance_jaccard(k)})
overlap = pd.DataFrame(rows)
fig, axes = plt.subplots(1, len(core), figsize=(3.4 * len(core), 3.6), sharey=True, squeeze=False)
styles = {"split_half": ("k", "--", "split half (ARM)"), "chance": ("0.5", ":", "chance")}
for ax, t in zip(axes[0], core):
    for n in [*others, "split_half", "chance"]:
        sub = overlap[(overlap.task == t) & (overlap.model == n)].groupby("fraction").jaccard.agg(["mean", "min", "max"])
        color, ls, label = styles.get(n, (plotting.RUN_COLORS.get(n), "-", plotting.RUN_LABELS.get(n, n)))
        ax.plot(sub.index, sub["mean"], color=color, ls=ls, lw=1.8 if n in ("mdm", "arm_continued") else 1,
                label=label)
        if n not in styles:
            ax.fill_between(sub.index, sub["min"], sub["max"], color=color, alpha=0.12, lw=0)
    ax.axvline(K / graph.n_edges, color="0.5", lw=0.8, ls=":")
    ax.set(xscale="log", title=f"{t.replace('_', ' ')}\n({regime[t]})", xlabel="fraction of edges (K / all)",
           ylim=(0, 1.02))
axes[0, 0].set_ylabel("Jaccard with the ARM's top-K")
plotting.legend_below(fig, axes[0, -1], height=0.12)
plotting.save_figure(fig, overlap, "03_jaccard_vs_k", figures_dir)
plt.show()
at_k = overlap[overlap.k == K].pivot_table(index="task", columns="model", values="jaccard").reindex(core)
display(at_k.round(3))

# %% [markdown]
# ## Without a K: the smallest faithful circuits
#
# A fixed K can favour one model: a model whose circuit is smaller has more noise in its
# top-K. Here each model gets the smallest top-k circuit that reaches 80% and 90%
# faithfulness on its pool (K@80, K@90), and the overlap of those circuits with the ARM's.

# %%
rows = []
for s in tqdm(exp.seeds, desc="minimal circuits"):
    for t in core:
        found = {}
        for n in ("arm", "mdm", "arm_continued"):
            if (s, n, t) not in att:
                continue
            model = exp.models(s, [n])[n]
            found[n], _ = minimal_circuit(model, pools[s][t], att[(s, n, t)], batch_size=batch_size,
                                          shift=exp.pair.shift)
        for lvl in (0.8, 0.9):
            k_arm = found["arm"][lvl]
            for n, ks in found.items():
                k_n = ks[lvl]
                jac = float("nan")
                if k_arm is not None and k_n is not None:
                    a = graph.top_edges(att[(s, "arm", t)].edge_scores, k_arm)
                    b = graph.top_edges(att[(s, n, t)].edge_scores, k_n)
                    jac = float((a & b).sum() / (a | b).sum())
                rows.append({"seed": s, "task": t, "regime": regime[t], "level": lvl, "model": n,
                             "k_minimal": np.nan if k_n is None else k_n, "jaccard_with_arm": jac})
minimal = pd.DataFrame(rows)
plotting.save_table(minimal, "03_minimal_circuits", figures_dir)
display(minimal.groupby(["task", "level", "model"])[["k_minimal", "jaccard_with_arm"]].mean().round(3))

# %% [markdown]
# ## Where in depth: the distribution over layers
#
# The share of each layer in a circuit's component importance (s(v), the sum of |score|
# over v's circuit edges), its centre of mass, and the early-layer share, each also
# without the layer-0 MLP (which carries much of every circuit of a small model: a shift of
# its weight alone would read as "earlier"). Points: seeds.

# %%
prof_rows, depth_rows = [], []
depth_models = [n for n in ("arm", "mdm", "arm_continued", "mdm_causal", "step0", "mdm_scratch") if n in exp.model_names()]
for s in exp.seeds:
    for t in core:
        scores = per_example(s, t, depth_models)
        imp = stats.importance(torch.stack([x.mean(0) for x in scores.values()]), K)
        prof = stats.profile(imp)
        for i, n in enumerate(scores):
            for layer in range(n_layers):
                prof_rows.append({"seed": s, "task": t, "regime": regime[t], "model": n, "layer": layer,
                                  "share": float(prof[i, layer])})
        st = seed_statistics(stats, scores, K, n_early)
        for n in scores:
            depth_rows.append({"seed": s, "task": t, "regime": regime[t], "model": n,
                               "early_share": st[f"early/{n}"], "early_share_without_m0": st[f"early_wo/{n}"],
                               "center_of_mass": st[f"com/{n}"], "center_of_mass_without_m0": st[f"com_wo/{n}"],
                               "layer0_share": float(prof[list(scores).index(n), 0])})
profiles = pd.DataFrame(prof_rows)
depth = pd.DataFrame(depth_rows)
fig, axes = plt.subplots(1, len(core), figsize=(3.3 * len(core), 3.4), sharey=True, squeeze=False)
for ax, t in zip(axes[0], core):
    for n in ("arm", "mdm", "arm_continued"):
        sub = profiles[(profiles.task == t) & (profiles.model == n)].groupby("layer").share.agg(["mean", "min", "max"])
        ax.plot(sub.index, sub["mean"], marker="o", ms=3, color=plotting.RUN_COLORS[n], label=plotting.RUN_LABELS[n])
        ax.fill_between(sub.index, sub["min"], sub["max"], color=plotting.RUN_COLORS[n], alpha=0.15, lw=0)
    ax.axvspan(-0.5, n_early - 0.5, color="0.92", zorder=0)
    ax.set(title=f"{t.replace('_', ' ')}", xlabel="layer", xticks=range(n_layers))
axes[0, 0].set_ylabel("share of circuit importance")
axes[0, 0].legend(fontsize=7)
fig.suptitle("Depth profile (shaded: early layers; bands: range over seeds)", fontsize=10)
fig.tight_layout()
plotting.save_figure(fig, profiles, "03_depth_profile", figures_dir)
plt.show()
display(depth.groupby(["task", "model"])[["early_share", "early_share_without_m0", "center_of_mass",
                                           "layer0_share"]].mean().unstack("model").round(3))

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
for ax, col, label in zip(axes, ("early_share", "early_share_without_m0", "center_of_mass"),
                          (f"share in layers < {n_early}", f"share in layers < {n_early}, without m0",
                           "centre of mass (layer)")):
    for k, n in enumerate(depth_models):
        sub = depth[depth.model == n]
        means = sub.groupby("task")[col].mean().reindex(core)
        x = np.arange(len(core)) + (k - (len(depth_models) - 1) / 2) * 0.8 / len(depth_models)
        ax.scatter(x, means, marker="_", s=120, color=plotting.RUN_COLORS[n], label=plotting.RUN_LABELS[n])
        for i, t in enumerate(core):
            v = sub[sub.task == t][col]
            ax.scatter(np.full(len(v), x[i]), v, s=8, color=plotting.RUN_COLORS[n], alpha=0.7)
    ax.set_xticks(range(len(core)), [t.replace("_", "\n") for t in core], fontsize=8)
    ax.set(ylabel=label)
axes[0].legend(fontsize=6, ncol=2)
fig.suptitle("Depth of each model's circuit (dash: mean over seeds; points: seeds)", fontsize=10)
fig.tight_layout()
plotting.save_figure(fig, depth, "03_depth_summary", figures_dir)
plt.show()

# %% [markdown]
# ## Circuit diagrams (first seed)
#
# The top edges of each circuit, layer by layer; width by |score|. Scores are noising
# effects (the change of the logit difference when an edge carries its corrupted value), so
# an edge that carries the answer has a negative score: blue; red edges work against the
# answer. At most 40 edges drawn per panel.

# %%
s0 = exp.seeds[0]
fig, axes = plt.subplots(2, len(core), figsize=(4.2 * len(core), 8.4), squeeze=False)
drawn = []
for c, t in enumerate(core):
    for r, n in enumerate(("arm", "mdm")):
        res = att[(s0, n, t)]
        table = plotting.draw_circuit(axes[r, c], graph, res.edge_scores, graph.top_edges(res.edge_scores, K),
                                      f"{t.replace('_', ' ')} · {plotting.MODEL_LABELS[n]}", max_edges=40)
        drawn.append(table.assign(task=t, model=n, seed=s0))
plotting.circuit_legend(fig, loc="lower center", ncol=2, fontsize=8, frameon=False)
fig.tight_layout(rect=(0, 0.04, 1, 1))
plotting.save_figure(fig, pd.concat(drawn, ignore_index=True), "03_circuit_diagrams", figures_dir)
plt.show()

# %% [markdown]
# ## Where in the sequence: position-resolved attribution
#
# Each edge's score split by where its source sits: the **prefix** (before the read
# position), the **read** position, the answer **slot**(s), the **suffix** (after the last
# slot). The share of total |attribution| each carries. A causal model cannot attribute
# anything to the slot or the suffix: its share there is exactly 0. The MDM's share after
# the read position is the measure of how much of its computation reads later context.

# %%
rows = []
for s in exp.seeds:
    for t in task_names:
        for n in ("arm", "mdm", "step0", "mdm_causal", "arm_continued"):
            if (s, n, t) not in att:
                continue
            shares = region_shares(att[(s, n, t)])
            for region in REGIONS:
                rows.append({"task": t, "model": n, "seed": s, "region": region, "share": float(shares[region])})
positions = pd.DataFrame(rows)
fig, axes = plt.subplots(1, len(task_names), figsize=(2.6 * len(task_names), 3.4), sharey=True, squeeze=False)
shown_models = [n for n in ("arm", "step0", "mdm") if n in set(positions.model)]
colors = {"prefix": "#4c72b0", "read": "#55a868", "slot": "#c44e52", "suffix": "#8172b2"}
for ax, t in zip(axes[0], task_names):
    bottom = np.zeros(len(shown_models))
    for region in REGIONS:
        v = [positions[(positions.task == t) & (positions.model == n) & (positions.region == region)].share.mean()
             for n in shown_models]
        ax.bar(range(len(shown_models)), v, bottom=bottom, color=colors[region], label=region)
        bottom += np.nan_to_num(v)
    ax.set_xticks(range(len(shown_models)), [plotting.RUN_LABELS[n].split(" (")[0] for n in shown_models],
                  fontsize=7, rotation=20)
    ax.set_title(t.replace("_", " "), fontsize=9)
axes[0, 0].set_ylabel("share of |attribution| by source position")
fig.suptitle("Where the attributed information sits (mean over seeds)", fontsize=10)
plotting.legend_below(fig, axes[0, -1], height=0.1)
plotting.save_figure(fig, positions, "03_position_shares", figures_dir)
plt.show()
display(positions[positions.region == "suffix"].pivot_table(index="task", columns="model", values="share",
                                                            aggfunc=["mean", "max"]).round(4))

# %% [markdown]
# ## The scorecard rows of claims 1 and 2
#
# Every statistic per seed and per bootstrap draw (seeds, then examples, the same examples
# for every model of a seed), each model's value minus its ARM's; then the rule stated at
# the top. Other controls' changes are given beside the null.

# %%
STATS = {"circuit change (1 - Jaccard@K)": "change", "depth-profile distance (TV)": "profile_distance",
         "early-layer share": "early", "early-layer share without m0": "early_wo", "centre of mass": "com"}


def claim_rows(scores_by_seed, k, label="", task_list=None):
    """Scorecard rows of claims 1 and 2 from per-example scores {seed: {task: {model: tensor}}} (the tasks
    of ``task_list``, default every core task)."""
    out = []
    for t in task_list or core:
        n_examples = {s: len(next(iter(scores_by_seed[s][t].values()))) for s in scores_by_seed}
        models = list(next(iter(scores_by_seed.values()))[t])

        def stat(s, index):
            st = seed_statistics(stats, scores_by_seed[s][t], k, n_early, index)
            row = {}
            for key, prefix in STATS.items():
                for n in models:
                    base = 0.0 if prefix in ("change", "profile_distance") else st[f"{prefix}/arm"]
                    row[f"{key}|{n}"] = st[f"{prefix}/{n}"] - base
            return row

        per_seed, draws = seed_bootstrap(stat, n_examples, n_boot, seed)
        if regime[t] == tasks.PREFIX_DOMINANT:
            wanted = [("claim 1", "circuit change (1 - Jaccard@K)", "equivalence", 1),
                      ("claim 1", "depth-profile distance (TV)", "equivalence", 1)]
        else:
            wanted = [("claim 2", "circuit change (1 - Jaccard@K)", "effect", 1),
                      ("claim 2", "early-layer share", "effect", 1),
                      ("claim 2", "early-layer share without m0", "effect", 1)]
        for claim, key, kind, direction in wanted:
            cols = {n: f"{key}|{n}" for n in models}
            extra = {f"{n}_minus_arm": float(per_seed[c].mean()) for n, c in cols.items()
                     if n not in ("arm", "mdm", "arm_continued")}
            if "arm_continued" not in cols:  # a real pair: the MDM's change, but no null to read it against
                ps, dr = pd.DataFrame({"mdm": per_seed[cols["mdm"]]}), pd.DataFrame({"mdm": draws[cols["mdm"]]})
                out.append(unreferenced_row(claim + label, t, regime[t], key, ps, dr, rule, {"k": k, **extra}))
                continue
            ps = pd.DataFrame({"mdm": per_seed[cols["mdm"]], "null": per_seed[cols["arm_continued"]]})
            dr = pd.DataFrame({"mdm": draws[cols["mdm"]], "null": draws[cols["arm_continued"]]})
            out.append(scorecard_row(claim + label, t, regime[t], key, ps, dr, kind, rule, direction,
                                     {"k": k, **extra}))
    return pd.DataFrame(out)


eapig_scores = {s: {t: per_example(s, t) for t in core} for s in exp.seeds}
rows_12 = claim_rows(eapig_scores, K)
if len(rows_12):
    display(rows_12[["claim", "task", "statistic", "mdm_minus_arm", "null_minus_arm", "excess", "ci_low", "ci_high",
                     "n_seeds", "seeds_holding", "verdict"]].round(3))

# %% [markdown]
# ## The same verdicts from exact edge patching
#
# Notebook 02 patched every edge of the ARM, the MDM and `arm_continued` on `n_exact`
# examples per task and seed. The verdicts recomputed from those exact scores (and from
# EAP-IG's on the same examples, for a like-for-like comparison) say whether the estimator
# decides any of them.

# %%
exact_rows = pd.DataFrame()
if n_exact and exp.embedded and len(rows_12):
    exact_scores, eapig_same = {}, {}
    for s in exp.seeds:
        exact_scores[s], eapig_same[s] = {}, {}
        for t in core:
            sub = pools[s][t].subset(range(min(n_exact, len(pools[s][t]))))
            exact_scores[s][t] = {n: exact_edges_traced(exp.models(s, [n])[n], n, exp.run_dir(s), t, sub,
                                                        shift=exp.pair.shift)
                                  for n in ("arm", "mdm", "arm_continued")}
            eapig_same[s][t] = {n: att[(s, n, t)].per_example[:len(sub)] for n in ("arm", "mdm", "arm_continued")}
    exact_rows = pd.concat([claim_rows(exact_scores, K).assign(scores="exact patching"),
                            claim_rows(eapig_same, K).assign(scores="EAP-IG (same examples)")], ignore_index=True)
    display(exact_rows.pivot_table(index=["task", "statistic"], columns="scores", values="verdict", aggfunc="first"))

# %% [markdown]
# ## Claim 4: robustness of the verdicts
#
# The paper (v5) reports its conclusions robust to the circuit budget K and to prompt
# resampling. Here: the verdicts at other circuit sizes, and on a second pool of examples
# drawn from another stream of held-out examples (its circuits traced the same way). The
# MDM's inference budget: its pool is the examples it answers with its default decoding (one
# answer slot per step, most confident first); with fewer steps (`mdm_decoding_steps`, e.g.
# all slots in one step) it answers other examples, so the pool, and the circuits traced on
# it, can change. Only a task with several answer slots (Countdown) has a budget to vary; a
# single-slot task is decoded in one step whatever the budget.

# %%
robust = []
if len(rows_12):
    for frac in robustness_k_fractions:
        k = max(1, round(frac * graph.n_edges))
        robust.append(claim_rows(eapig_scores, k).assign(setting=f"K = {k} ({frac:.0%} of edges)"))
    if n_resampled and exp.embedded:
        # fresh prompts: the same held-out entities, another stream of examples; the pool is again the
        # examples both the ARM and the MDM answer, traced for the models the rows need
        resampled, names_r, sizes = {}, ["arm", "mdm", "arm_continued"], {}
        by_budget, budget_sizes = {}, []  # the MDM's decoding budget: {steps: {seed: {task: {model: scores}}}}
        for s in tqdm(exp.seeds, desc="second pool (claim 4)"):
            models_r = exp.models(s, names_r)
            data = eval_sets(exp.tokenizer, 2 * n_resampled, s + resample_stream, core,
                             mask_token_id=exp.pair.mask_token_id)
            scored, _ = evaluate_models({n: models_r[n] for n in ("arm", "mdm")},
                                        {n: exp.decoding(n) for n in ("arm", "mdm")}, data, exp.tokenizer,
                                        exp.pair.shift, progress=False)
            second = {t: data[t].subset(pool_indices(scored, data[t], n_resampled)) for t in core}
            sizes[s] = {t: len(d) for t, d in second.items()}
            if min(sizes[s].values()) < 2:
                continue
            label = f"resampled{resample_stream}"
            traced_r = trace_models(models_r, exp.run_dir(s), {f"{t}@{label}": d for t, d in second.items()},
                                    shift=exp.pair.shift, ig_steps=ig_steps, batch_size=batch_size, progress=False,
                                    ig_rule=ig_rule)
            resampled[s] = {t: {n: traced_r[(n, f"{t}@{label}")].per_example for n in names_r} for t in core}
            multi = [t for t in core if data[t].answer_positions.shape[1] > 1]  # tasks with a budget to vary
            for b in mdm_decoding_steps if multi else []:
                scored_b, _ = evaluate_models({"mdm": models_r["mdm"]}, {"mdm": Decoding("confidence", steps=b)},
                                              {t: data[t] for t in multi}, exp.tokenizer, exp.pair.shift,
                                              progress=False)
                scored_b = pd.concat([scored[scored.model != "mdm"], scored_b], ignore_index=True)
                pool_b = {t: data[t].subset(pool_indices(scored_b, data[t], n_resampled)) for t in multi}
                budget_sizes.append({"seed": s, "mdm_steps": b, **{t: len(d) for t, d in pool_b.items()},
                                     **{f"{t} (default)": sizes[s][t] for t in multi},
                                     **{f"{t} shared with default": len(set(map(tuple, pool_b[t].full_ids.tolist()))
                                                                         & set(map(tuple, second[t].full_ids.tolist())))
                                        for t in multi}})
                if min(len(d) for d in pool_b.values()) < 2:
                    continue
                label_b = f"{label}-mdm{b}steps"
                traced_b = trace_models(models_r, exp.run_dir(s), {f"{t}@{label_b}": d for t, d in pool_b.items()},
                                        shift=exp.pair.shift, ig_steps=ig_steps, batch_size=batch_size,
                                        progress=False, ig_rule=ig_rule)
                by_budget.setdefault(b, {})[s] = {t: {n: traced_b[(n, f"{t}@{label_b}")].per_example
                                                      for n in names_r} for t in multi}
        print(f"second pool sizes (of {2 * n_resampled} fresh held-out prompts per task and seed): {sizes}")
        if len(resampled) < len(exp.seeds):  # barely trained models (smoke runs)
            print("a second pool has fewer than 2 examples: no verdicts from it")
        else:
            robust.append(claim_rows(resampled, K).assign(setting=f"second pool (K = {K}, fresh prompts)"))
        if budget_sizes:
            print("the MDM's decoding budget: pool sizes on the second pool's prompts, and how many of them the "
                  "default budget's pool also holds")
            display(pd.DataFrame(budget_sizes))
        for b, by_seed in by_budget.items():
            if len(by_seed) < len(exp.seeds):
                print(f"MDM decoding in {b} step(s): a pool has fewer than 2 examples; no verdicts")
                continue
            multi = list(next(iter(by_seed.values())))
            robust.append(claim_rows(by_seed, K, task_list=multi).assign(
                setting=f"second pool, MDM decoding in {b} step(s) (K = {K})"))
    robust = pd.concat([rows_12.assign(setting=f"K = {K} (main)"), *robust], ignore_index=True)
    table = robust.pivot_table(index=["task", "statistic"], columns="setting", values="verdict", aggfunc="first")
    display(table)
    plotting.save_table(robust, "03_robustness", figures_dir)

# %%
scorecard = pd.concat([rows_12, exact_rows], ignore_index=True) if len(exact_rows) else rows_12
plotting.save_table(scorecard, "03_scorecard_rows", figures_dir)
for t in core:
    sub = rows_12[rows_12.task == t] if len(rows_12) else rows_12
    for r in sub.itertuples():
        print(f"{t:13s} {r.claim}: {r.statistic}: MDM {r.mdm_minus_arm:+.3f}, null {r.null_minus_arm:+.3f}, "
              f"excess {r.excess:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] ({r.seeds_holding}/{r.n_seeds} seeds) "
              f"-> {r.verdict}")
