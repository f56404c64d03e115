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
# # 04 · Targeted ablations
#
# The paper (v5) backs the structural picture with interventions: zeroing the MDM's
# early-layer structures hurts it on Countdown, while zeroing random or mid/late structures
# of the same size does not. Read naively, that comparison is built in: in a small model the
# early layers hold most of any circuit's importance, so removing the top early components
# removes more of the circuit than removing the top late ones. Here the groups are made
# comparable:
#
# * **early** and **mid/late**: each model's most important components (heads and MLPs, by
#   circuit importance) of those layers, taken until each group holds the *same share* of
#   the model's importance (`match_fraction` of the smaller of the two layer ranges' totals);
# * **m0**, the layer-0 MLP, on its own (it would otherwise sit in every early group);
# * **random**: `n_random` draws of as many components as the early groups hold, the same
#   draws for every model of a seed;
#
# ablated by zeroing, by the mean over the pool, and by **resampling** (each example takes
# another example's activations), on every seed, for the ARM, the MDM and the null
# `arm_continued`. The drop of the logit difference is a share of the clean one; intervals
# come from the hierarchical bootstrap (seeds, then examples; random groups averaged over
# their draws per example).

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
k_fraction = 0.1
k_edges = 0  # a fixed K when positive; 0: k_fraction of all edges (embedded), 1000 (real pairs)
early_layers = 0  # 0: the first half
match_fraction = 0.5  # each group holds this share of the smaller of the early and mid/late totals
n_random = 5
ablations = ["zero", "mean", "resample"]
n_boot = 500
level = 0.95
min_seed_fraction = 0.66  # share of seeds whose own excess must agree with a verdict (0.66: 2 of 3; 0.67 would ask for 3)
equivalence_margin = 0.1

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display
from tqdm import tqdm

from mechshift_utils import tasks
from mechshift_utils.analysis.ablations import ablate_components, matched_groups
from mechshift_utils.analysis.circuit_stats import CircuitStats
from mechshift_utils.analysis.comparison import early_layer_count
from mechshift_utils.analysis.scorecard import VerdictRule, scorecard_row, unreferenced_row
from mechshift_utils.analysis.seeds import mean_interval, seed_bootstrap
from mechshift_utils.attribution.tracing import circuit_size, pool_data, resolve_batch_size, trace_models
from mechshift_utils.core.seeding import stable_seed
from mechshift_utils.core.validation import ParameterError, check_positive_int
from mechshift_utils.notebook import plotting
from mechshift_utils.notebook.params import NotebookParams, figures_dir_for
from mechshift_utils.notebook.pipeline import prepare_experiment
from mechshift_utils.tasks import CORE_TASKS, task_names_for

params = NotebookParams(model_pair, seed, device, smoke, dtype, device_map, seeds, workers).validated()
figures_dir = figures_dir_for(figures_dir, smoke)  # smoke runs leave the committed figures alone
if smoke:
    pool_limit, ig_steps, n_random, n_boot = min(pool_limit, 8), min(ig_steps, 2), min(n_random, 2), min(n_boot, 20)
for name, value in (("n_random", n_random), ("n_boot", n_boot)):
    check_positive_int(name, value)
if not ablations or any(a not in ("zero", "mean", "resample", "patching") for a in ablations):
    raise ParameterError(f"ablations: expected a non-empty list of 'zero', 'mean', 'resample', 'patching', "
                         f"got {ablations!r}")
rule = VerdictRule(level, min_seed_fraction, equivalence_margin).validate()
plotting.use_style()
exp = prepare_experiment(params, artifacts_dir)
task_names = list(task_names_for(exp.tokenizer))
core = [t for t in CORE_TASKS if t in task_names]
regime = {t: tasks.get_task(t).regime for t in task_names}
models_ablated = [n for n in ("arm", "mdm", "arm_continued") if n in exp.model_names()]
pools = {s: {t: pool_data(exp.run_dir(s), t, exp.tokenizer, pool_limit, s if smoke else None, exp.pair.mask_token_id)
             for t in core} for s in exp.seeds}
batch_size = resolve_batch_size(exp.pair, batch_size, pools[exp.seeds[0]], ig_steps)
att = {}
for s in exp.seeds:
    traced = trace_models(exp.models(s, models_ablated), exp.run_dir(s), pools[s], shift=exp.pair.shift,
                          ig_steps=ig_steps, batch_size=batch_size, embedded=exp.embedded, progress=False,
                          ig_rule=ig_rule)
    att.update({(s, n, t): a for (n, t), a in traced.items()})
graph = next(iter(att.values())).graph
stats = CircuitStats(graph)
n_early = early_layer_count(graph.arch.n_layers, early_layers)
K = circuit_size(graph, k_edges, k_fraction, params.model_pair)
print(f"K = {K}; early layers: < {n_early}; models: {', '.join(models_ablated)}; seeds {exp.seeds}")

# %% [markdown]
# ## The groups
#
# Per seed and task, each model's groups and the share of its circuit's importance they hold.

# %%
group_rows = []
for s in exp.seeds:
    for t in core:
        g = matched_groups(stats, {n: att[(s, n, t)].edge_scores for n in models_ablated}, K, n_early, n_random,
                           stable_seed(s, t, "ablation draws") % 2**32, match_fraction)
        group_rows.append(g.assign(seed=s, task=t))
groups = pd.concat(group_rows, ignore_index=True)
display(groups[groups.group != "random"].pivot_table(index=["task", "group"], columns="model", values="share",
                                                      aggfunc="mean").round(3))
first = groups[(groups.seed == exp.seeds[0]) & (groups.group.isin(["early", "mid/late"]))]
display(first.pivot_table(index=["task", "group"], columns="model", values="components",
                          aggfunc=lambda c: ", ".join(c.iloc[0])))

# %%
rows = []
for ablation in ablations:
    for (s, t, n), sub in tqdm(list(groups.groupby(["seed", "task", "model"], sort=False)), desc=f"{ablation}"):
        labelled = {f"{g.group}#{g.draw}": g.components for g in sub.itertuples()}
        model = exp.models(s, [n])[n]
        per_example = ablate_components(model, pools[s][t], labelled, ablation, batch_size=batch_size,
                                        shift=exp.pair.shift)
        per_example[["group", "draw"]] = per_example.group.str.split("#", expand=True)
        rows.append(per_example.assign(seed=s, task=t, model=n, ablation=ablation))
results = pd.concat(rows, ignore_index=True)
# the drop as a share of the model's mean clean logit difference on the seed's pool; random draws averaged
results["drop"] = (results.metric_clean - results.metric_ablated) / results.groupby(
    ["ablation", "seed", "task", "model"]).metric_clean.transform("mean")
per_example = results.groupby(["ablation", "seed", "task", "model", "group", "example"], sort=False)["drop"].mean()
per_example = per_example.reset_index()

summary_rows = []
for (ablation, t, n, group), sub in per_example.groupby(["ablation", "task", "model", "group"], sort=False):
    by_seed = {s: g["drop"].to_numpy() for s, g in sub.groupby("seed")}
    summary_rows.append({"ablation": ablation, "task": t, "regime": regime[t], "model": n, "group": group,
                         **mean_interval(by_seed, n_boot, seed, level)})
summary = pd.DataFrame(summary_rows)
display(summary.pivot_table(index=["ablation", "task", "group"], columns="model", values="mean").round(2))

# %%
group_order = ["early", "mid/late", "m0", "random"]
fig, axes = plt.subplots(len(ablations), len(core), figsize=(3.3 * len(core), 2.9 * len(ablations)),
                         sharey="row", squeeze=False)
for r, ablation in enumerate(ablations):
    for c, t in enumerate(core):
        ax = axes[r, c]
        for k, n in enumerate(models_ablated):
            sub = summary[(summary.ablation == ablation) & (summary.task == t) & (summary.model == n)]
            sub = sub.set_index("group").reindex(group_order)
            x = np.arange(len(group_order)) + (k - (len(models_ablated) - 1) / 2) * 0.8 / len(models_ablated)
            ax.bar(x, sub["mean"], 0.8 / len(models_ablated), color=plotting.RUN_COLORS[n],
                   label=plotting.RUN_LABELS[n])
            ax.errorbar(x, sub["mean"], yerr=[(sub["mean"] - sub.ci_low).clip(lower=0),
                                              (sub.ci_high - sub["mean"]).clip(lower=0)], fmt="none", color="k",
                        capsize=2, lw=0.8)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(range(len(group_order)), group_order, fontsize=8)
        ax.set_title(f"{t.replace('_', ' ')} · {ablation}", fontsize=9)
    axes[r, 0].set_ylabel("logit-difference drop\n(share of clean)", fontsize=8)
fig.suptitle("Ablating importance-matched groups (95% intervals over seeds and examples)", fontsize=10)
plotting.legend_below(fig, axes[0, 0], height=0.04)
plotting.save_figure(fig, summary, "04_ablation_metric_drop", figures_dir)
plt.show()

# %% [markdown]
# ## The paper's ablation claim, against the null
#
# "Early-layer structures matter more to the MDM." Per example: the drop from the early
# group minus the drop from the mid/late group (the two hold the same share of the
# circuit), the MDM's minus its ARM's, read against `arm_continued`'s minus the ARM's, on the
# globally constrained tasks (the paper's claim is about them). It supports claim 2 when the
# excess is positive under the rule of notebook 03.

# %%
score_rows = []
null = "arm_continued" in models_ablated  # a real pair has no control: its rows carry no verdict
for ablation in ablations:
    for t in [t for t in core if regime[t] == tasks.GLOBALLY_CONSTRAINED]:
        wide = per_example[(per_example.ablation == ablation) & (per_example.task == t)
                           & per_example.group.isin(["early", "mid/late"])]
        wide = wide.pivot_table(index=["seed", "example"], columns=["model", "group"], values="drop")
        diff = {n: wide[(n, "early")] - wide[(n, "mid/late")] for n in models_ablated}
        per_seed_values = {s: {n: diff[n].loc[s].to_numpy() for n in models_ablated} for s in exp.seeds}

        def stat(s, index):
            v = per_seed_values[s]
            pick = slice(None) if index is None else index.numpy()
            arm = v["arm"][pick].mean()
            out = {"mdm": v["mdm"][pick].mean() - arm}
            if null:
                out["null"] = v["arm_continued"][pick].mean() - arm
            return out

        per_seed, draws = seed_bootstrap(stat, {s: len(per_seed_values[s]["arm"]) for s in exp.seeds}, n_boot, seed)
        name = f"early minus mid/late drop ({ablation})"
        score_rows.append(scorecard_row("claim 2 (ablation)", t, regime[t], name, per_seed, draws, "effect", rule,
                                        1, {"ablation": ablation}) if null else
                          unreferenced_row("claim 2 (ablation)", t, regime[t], name, per_seed, draws, rule,
                                           {"ablation": ablation}))
scores = pd.DataFrame(score_rows)
plotting.save_table(scores, "04_scorecard_rows", figures_dir)
display(scores[["claim", "task", "statistic", "mdm_minus_arm", "null_minus_arm", "excess", "ci_low", "ci_high",
                "seeds_holding", "verdict"]].round(3))
