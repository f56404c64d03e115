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
# # 06 · The shift along post-training: circuits at every checkpoint
#
# The paper compares the end points only: its published MDMs come without intermediate
# checkpoints. The organism saves them, for the MDM and for the two controls trained from
# the same ARM with the same batches (`arm_continued`: next-token loss, causal, the null;
# `mdm_causal`: the masked loss with attention kept causal), at every checkpoint step
# (step 0, the end of the attention annealing, and evenly spaced steps to the last). So we
# can ask *when* and *how* the mechanism moves.
#
# At every checkpoint of every run and seed: held-out accuracy and mean logit difference;
# the EAP-IG circuit on the first `n_dynamics` examples of each pool; its Jaccard with the
# ARM's circuit on the same examples; its depth (early-layer share, centre of mass); the
# share of its attribution that comes from after the read position (the slot and the
# suffix: what only bidirectional attention can read); and its concentration (normalised
# entropy and effective number of head and MLP importance). Lines are means over seeds,
# bands the range over seeds; the shaded window is the annealing of the attention.
#
# **When does the circuit shift?** The rule, before the numbers: the first checkpoint at
# which the MDM's mean Jaccard with the ARM (over seeds) falls below the lowest
# `arm_continued` seed at that step and stays below it at every later checkpoint. At step 0
# `arm_continued` *is* the ARM (Jaccard 1), while the MDM's step 0 is the ARM's weights read
# with full attention: a shift "at step 0" is the one that opening the attention makes before
# any update. The table gives the MDM's Jaccard at step 0 beside its last one, so a reader sees
# whether post-training moves the circuit further or back. Tasks whose corruption changes only
# what a causal model cannot see (the late Countdown copy, in-place infilling) give the ARM no
# attribution at all, so no circuit to compare with: their Jaccard is left undefined.

# %% tags=["parameters"]
# mechshift: after 01  (the notebooks this one needs; run_all.sh --jobs runs others beside it)
# mechshift: embedded pair only
model_pair = "embedded"
seed = 0
seeds = 0  # trained models per recipe; 0: 3 for the embedded pair
device = "auto"
dtype = "auto"
device_map = ""
workers = 0
smoke = False
artifacts_dir = "../artifacts"
figures_dir = "../figures"
ig_steps = 8
ig_rule = "midpoint"  # EAP-IG's points: "midpoint" (k + 0.5) / ig_steps, or "left" k / ig_steps
pool_limit = 300
n_dynamics = 64  # examples per pool traced at every checkpoint (the bands cover these)
n_eval_curve = 200  # held-out examples per task for accuracy and logit difference at every checkpoint
batch_size = 0
k_fraction = 0.1
k_edges = 0
early_layers = 0

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display
from tqdm import tqdm

from mechshift_utils import tasks
from mechshift_utils.analysis.circuit_stats import CircuitStats, seed_statistics
from mechshift_utils.analysis.comparison import early_layer_count
from mechshift_utils.attribution.regions import region_shares
from mechshift_utils.attribution.tracing import circuit_size, pool_data, resolve_batch_size, trace_models
from mechshift_utils.core.validation import ParameterError, check_positive_int
from mechshift_utils.evaluation.accuracy import accuracy_along_post_training, eval_sets
from mechshift_utils.models.embedded import DENSE, configs_for
from mechshift_utils.notebook import plotting
from mechshift_utils.notebook.params import NotebookParams, figures_dir_for
from mechshift_utils.notebook.pipeline import prepare_experiment

params = NotebookParams(model_pair, seed, device, smoke, dtype, device_map, seeds, workers).validated()
figures_dir = figures_dir_for(figures_dir, smoke)
if params.model_pair != "embedded":
    raise ParameterError("model_pair: the published MDMs come without post-training checkpoints; this notebook "
                         "runs on the embedded pair only (run_all.sh skips it for a real pair)")
if smoke:
    pool_limit, n_dynamics, n_eval_curve, ig_steps = min(pool_limit, 8), min(n_dynamics, 4), 8, min(ig_steps, 2)
for name, value in (("n_dynamics", n_dynamics), ("n_eval_curve", n_eval_curve), ("pool_limit", pool_limit)):
    check_positive_int(name, value)
plotting.use_style()
exp = prepare_experiment(params, artifacts_dir)
_, post_cfg = configs_for(smoke)
task_names = list(tasks.TASK_NAMES)
regime = {t: tasks.get_task(t).regime for t in task_names}
pools = {s: {t: pool_data(exp.run_dir(s), t, exp.tokenizer, pool_limit, s if smoke else None, exp.pair.mask_token_id)
             for t in task_names} for s in exp.seeds}
subsets = {s: {t: d.subset(range(min(n_dynamics, len(d)))) for t, d in p.items()} for s, p in pools.items()}
batch_size = resolve_batch_size(exp.pair, batch_size, pools[exp.seeds[0]], ig_steps)
runs = {r.seed: r for r in exp.runs}
steps = sorted(runs[exp.seeds[0]].checkpoints["mdm"])
print(f"checkpoints at steps {steps} of {', '.join(DENSE)}; annealing ends at {post_cfg.anneal_steps}; "
      f"{n_dynamics} examples per pool and seed")

# %% [markdown]
# ## Accuracy and logit difference at every checkpoint

# %%
curve_rows = []
for s in tqdm(exp.seeds, desc="accuracy"):
    data = {t: d.subset(range(min(n_eval_curve, len(d)))) for t, d in
            eval_sets(exp.tokenizer, n_eval_curve, s, task_names).items()}
    for name in DENSE:
        curve = accuracy_along_post_training(runs[s].checkpoints[name], data, exp.decoding(name), exp.pair.device,
                                             exp.pair.shift, progress=False, cache_dir=exp.run_dir(s) / "curves")
        curve_rows.append(curve.assign(seed=s, model=name))
behaviour = pd.concat(curve_rows, ignore_index=True)

# %% [markdown]
# ## Circuits at every checkpoint
#
# Every checkpoint traced on the same examples as the ARM (the first `n_dynamics` of each
# pool); the ARM's own circuit on them is the reference.

# %%
rows = []
graph = stats = K = n_early = None
for s in tqdm(exp.seeds, desc="seeds"):
    arm_att = trace_models(exp.models(s, ["arm"]), exp.run_dir(s), {f"{t}@{n_dynamics}": d for t, d in subsets[s].items()},
                           shift=exp.pair.shift, ig_steps=ig_steps, batch_size=batch_size, progress=False,
                           ig_rule=ig_rule)
    if graph is None:
        graph = next(iter(arm_att.values())).graph
        stats = CircuitStats(graph)
        K = circuit_size(graph, k_edges, k_fraction, params.model_pair)
        n_early = early_layer_count(graph.arch.n_layers, early_layers)
    for name in DENSE:
        for step in sorted(runs[s].checkpoints[name]):
            label = f"{name}@{step}"
            model = exp.models(s, [label])[label]
            traced = trace_models({label: model}, exp.run_dir(s),
                                  {f"{t}@{n_dynamics}": d for t, d in subsets[s].items()}, shift=exp.pair.shift,
                                  ig_steps=ig_steps, batch_size=batch_size, progress=False, ig_rule=ig_rule)
            exp.forget(s, [label])
            for t in task_names:
                key = f"{t}@{n_dynamics}"
                scores = {"arm": arm_att[("arm", key)].per_example, label: traced[(label, key)].per_example}
                st = seed_statistics(stats, scores, K, n_early)
                if not bool(scores["arm"].abs().sum()):  # the ARM cannot see what the corruption changes:
                    st[f"jaccard/{label}"] = np.nan  # no ARM circuit, so no overlap with it
                shares = region_shares(traced[(label, key)])
                imp = stats.importance(scores[label].mean(0), K)
                entropy = float(stats.entropy_norm(imp)[0])
                values = {"jaccard_with_arm": st[f"jaccard/{label}"], "early_share": st[f"early/{label}"],
                          "center_of_mass": st[f"com/{label}"], "after_read_share": float(shares["slot"] + shares["suffix"]),
                          "suffix_share": float(shares["suffix"]), "entropy_norm": entropy,
                          "effective_number": float(np.exp(entropy * np.log(len(stats.model_components))))}
                for metric, value in values.items():
                    rows.append({"seed": s, "model": name, "step": step, "task": t, "metric": metric, "value": value})
circuits = pd.DataFrame(rows)
long = pd.concat([circuits, behaviour.melt(id_vars=["seed", "model", "step", "task"],
                                           value_vars=["accuracy", "mean_logit_diff"], var_name="metric")],
                 ignore_index=True)[["seed", "model", "step", "task", "metric", "value"]]
plotting.save_table(long, "06_shift_dynamics", figures_dir)

# %%
metrics = [("accuracy", "held-out accuracy"), ("mean_logit_diff", "mean logit difference"),
           ("jaccard_with_arm", f"Jaccard with the ARM's top-{K}"), ("early_share", f"share in layers < {n_early}"),
           ("after_read_share", "share from after the read position"), ("entropy_norm", "normalised entropy")]
shown = [t for t in ("ioi", "greater_than", "countdown", "infilling", "infilling_in_place") if t in task_names]
fig, axes = plt.subplots(len(metrics), len(shown), figsize=(3.0 * len(shown), 2.1 * len(metrics)), sharex=True,
                         squeeze=False)
for r, (metric, label) in enumerate(metrics):
    for c, t in enumerate(shown):
        ax = axes[r, c]
        for name in DENSE:
            sub = long[(long.metric == metric) & (long.task == t) & (long.model == name)].groupby("step").value.agg(
                ["mean", "min", "max"])
            ax.plot(sub.index, sub["mean"], color=plotting.RUN_COLORS[name], lw=1.4,
                    label=plotting.RUN_LABELS[name] if (r, c) == (0, 0) else None)
            ax.fill_between(sub.index, sub["min"], sub["max"], color=plotting.RUN_COLORS[name], alpha=0.15, lw=0)
        ax.axvspan(0, post_cfg.anneal_steps, color="0.9", zorder=0)
        if r == 0:
            ax.set_title(t.replace("_", " "), fontsize=9)
        if c == 0:
            ax.set_ylabel(label, fontsize=8)
        if r == len(metrics) - 1:
            ax.set_xlabel("post-training step", fontsize=8)
        ax.tick_params(labelsize=7)
fig.legend(loc="upper center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, 1.0))
fig.suptitle(f"The shift along post-training ({len(exp.seeds)} seeds: mean and range; circuits on {n_dynamics} "
             f"examples per pool; shaded: attention annealing)", fontsize=10, y=1.02)
fig.tight_layout(rect=(0, 0, 1, 0.97))
plotting.save_figure(fig, long, "06_shift_dynamics", figures_dir)
plt.show()

# %% [markdown]
# ## When does the circuit shift?
#
# Per task, with the rule stated at the top: the first checkpoint from which the MDM's mean
# Jaccard with its ARM stays below the lowest `arm_continued` seed; beside it, the first
# checkpoint from which the MDM's held-out accuracy stays within 0.05 of its final value
# (when the behaviour has settled), and the end of the annealing.


# %%
def first_lasting(steps_, condition):
    """The first step from which ``condition`` holds at every later step (None: never)."""
    for i, step in enumerate(steps_):
        if all(condition[j] for j in range(i, len(steps_))):
            return step
    return None


when_rows = []
for t in task_names:
    jac = long[(long.metric == "jaccard_with_arm") & (long.task == t)]
    mdm = jac[jac.model == "mdm"].groupby("step").value.mean()
    null_low = jac[jac.model == "arm_continued"].groupby("step").value.min()
    causal = jac[jac.model == "mdm_causal"].groupby("step").value.mean()
    st = list(mdm.index)
    below = [mdm[x] < null_low[x] for x in st]
    acc = long[(long.metric == "accuracy") & (long.task == t) & (long.model == "mdm")].groupby("step").value.mean()
    settled = [abs(acc[x] - acc.iloc[-1]) <= 0.05 for x in acc.index]
    defined = bool(mdm.notna().all()) and len(mdm) > 0
    when_rows.append({"task": t, "regime": regime[t],
                      "circuit_leaves_null_band_at": first_lasting(st, below) if defined else None,
                      "jaccard_mdm_at_step0": float(mdm.iloc[0]) if defined else np.nan,
                      "accuracy_settles_at": first_lasting(list(acc.index), settled),
                      "annealing_ends_at": post_cfg.anneal_steps,
                      "final_jaccard_mdm": float(mdm.iloc[-1]), "final_jaccard_null_low": float(null_low.iloc[-1]),
                      "final_jaccard_mdm_causal": float(causal.iloc[-1]),
                      "min_mean_logit_diff_step": int(long[(long.metric == "mean_logit_diff") & (long.task == t)
                                                           & (long.model == "mdm")].groupby("step").value.mean().idxmin())})
when = pd.DataFrame(when_rows)
plotting.save_table(when, "06_when_the_shift_happens", figures_dir)
display(when)
for r in when.itertuples():
    if np.isnan(r.jaccard_mdm_at_step0):
        print(f"{r.task:19s} no ARM circuit to compare with (the ARM's attribution is zero: the corruption "
              f"changes only what a causal model cannot see); accuracy settles from step {r.accuracy_settles_at}")
        continue
    shift = (f"from step {r.circuit_leaves_null_band_at} on" if pd.notna(r.circuit_leaves_null_band_at)
             else "never (it stays within reach of continued ARM training)")
    print(f"{r.task:19s} the circuit leaves the null band {shift}; accuracy settles from step "
          f"{r.accuracy_settles_at}; the annealing ends at {r.annealing_ends_at}")
