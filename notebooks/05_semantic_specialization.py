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
# # 05 · Semantic specialization: sharp components or spread-out work?
#
# The paper's claim 3: in both regimes, **ARMs rely on a few sharply specialised
# components; MDMs spread the work over many components, with more diffuse alignment to
# output tokens.** The paper argues it from logit-lens pictures and neuron explanations.
# Here we measure it, on the same pools and attributions as notebooks 02-04, every seed,
# against the null `arm_continued`:
#
# 1. **Logit lens of components.** Each head's and MLP's output at the read-out position
#    (slot − 1), sent through the final norm (its scale frozen at the whole residual's,
#    the standard direct-logit-attribution convention) and the unembedding: its direct
#    logit attribution (DLA) to the correct vs the counterfactual answer, and the tokens
#    it promotes. The pieces add up to the model's logit difference (checked below).
# 2. **Concentration numbers.** Over heads and MLPs: normalised entropy, effective number
#    exp(entropy), Gini, and the share of the top 5, for two weights per component: its
#    circuit importance (notebook 03's s(v) on the top-K circuit) and its answer alignment
#    |DLA|. The claim-3 rows of the scorecard read the MDM's change in normalised entropy
#    against the null's, with the rule of notebook 03.
# 3. **Early-layer neurons.** Neuron-level attribution of the early MLPs (integrated
#    gradients between the layer's corrupted and clean activations, checked against exact
#    single-neuron patching on the first seed), the top neurons of each model, their
#    top-activating tokens, an automatic one-line explanation (the input feature its
#    activation concentrates on) and its selectivity, every seed.

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
n_boot = 200  # hierarchical bootstrap draws (seeds, then examples)
level = 0.95
min_seed_fraction = 0.66  # share of seeds whose own excess must agree with a verdict (0.66: 2 of 3; 0.67 would ask for 3)
equivalence_margin = 0.1
n_lens_components = 6  # top components per model (by circuit importance) whose promoted tokens are shown
n_promoted = 5  # promoted tokens listed per component
neuron_ig_steps = 8
n_top_neurons = 20  # top-attributed early neurons explained per model, task and seed
exact_neuron_examples = -1  # examples for the IG-vs-exact neuron check (first seed); 0 skips; -1: 16 (embedded), 0 (real)
top_examples = 5  # top-activating token instances listed per neuron
min_support = 5  # a feature must hold on at least this many token instances to explain a neuron

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from tqdm import tqdm

from mechshift_utils import tasks
from mechshift_utils.analysis.circuit_stats import CircuitStats
from mechshift_utils.analysis.comparison import early_layer_count
from mechshift_utils.analysis.logit_lens import dla_grid, logit_lens, promoted_tokens
from mechshift_utils.analysis.neurons import (explain_neurons, feature_kind, neuron_attribution, selected_activations,
                                              token_features)
from mechshift_utils.analysis.scorecard import VerdictRule, scorecard_row, unreferenced_row
from mechshift_utils.analysis.seeds import mean_interval, seed_bootstrap
from mechshift_utils.analysis.specialization import (alignment_weights, concentration, importance_weights,
                                                      model_components)
from mechshift_utils.analysis.stats import spearman
from mechshift_utils.attribution.tracing import circuit_size, pool_data, resolve_batch_size, trace_models
from mechshift_utils.core.validation import check_non_negative_int, check_positive_int
from mechshift_utils.notebook import plotting
from mechshift_utils.notebook.params import NotebookParams, figures_dir_for
from mechshift_utils.notebook.pipeline import prepare_experiment
from mechshift_utils.tasks import CORE_TASKS, task_names_for

params = NotebookParams(model_pair, seed, device, smoke, dtype, device_map, seeds, workers).validated()
figures_dir = figures_dir_for(figures_dir, smoke)  # smoke runs leave the committed figures alone
if exact_neuron_examples == -1:  # one patched pass per neuron: affordable for the organism, not for 265k neurons
    exact_neuron_examples = 16 if params.model_pair == "embedded" else 0
if smoke:  # tiny models: the exact check is cheap whatever the pair
    pool_limit, ig_steps, n_boot = min(pool_limit, 8), min(ig_steps, 2), min(n_boot, 10)
    neuron_ig_steps, n_top_neurons, exact_neuron_examples, min_support = 2, min(n_top_neurons, 4), 4, 1
for name, value in (("pool_limit", pool_limit), ("n_boot", n_boot), ("n_lens_components", n_lens_components),
                    ("n_promoted", n_promoted), ("neuron_ig_steps", neuron_ig_steps),
                    ("n_top_neurons", n_top_neurons), ("top_examples", top_examples), ("min_support", min_support)):
    check_positive_int(name, value)
check_non_negative_int("exact_neuron_examples", exact_neuron_examples)
rule = VerdictRule(level, min_seed_fraction, equivalence_margin).validate()
plotting.use_style()
exp = prepare_experiment(params, artifacts_dir)
core = [t for t in CORE_TASKS if t in task_names_for(exp.tokenizer)]
regime = {t: tasks.get_task(t).regime for t in core}
compared = [n for n in ("arm", "mdm", "arm_continued", "mdm_causal", "step0", "mdm_scratch") if n in exp.model_names()]
pools = {s: {t: pool_data(exp.run_dir(s), t, exp.tokenizer, pool_limit, s if smoke else None, exp.pair.mask_token_id)
             for t in core} for s in exp.seeds}
batch_size = resolve_batch_size(exp.pair, batch_size, pools[exp.seeds[0]], ig_steps)
att = {}
for s in exp.seeds:
    traced = trace_models(exp.models(s, compared), exp.run_dir(s), pools[s], shift=exp.pair.shift, ig_steps=ig_steps,
                          batch_size=batch_size, embedded=exp.embedded, progress=False, ig_rule=ig_rule)
    att.update({(s, n, t): a for (n, t), a in traced.items()})
graph = next(iter(att.values())).graph
stats = CircuitStats(graph)
a = graph.arch
n_early = early_layer_count(a.n_layers, early_layers)
K = circuit_size(graph, k_edges, k_fraction, params.model_pair)
s0 = exp.seeds[0]
print(f"K = {K}; {len(stats.model_components)} heads and MLPs; early layers: < {n_early}; seeds {exp.seeds}")

# %% [markdown]
# ## 1 · Logit lens: what each component writes toward the answer
#
# Mean DLA to logit(correct) − logit(counterfactual) of every head (columns h0, h1, ...)
# and MLP (last column) per layer, first seed; red pushes the right answer, blue the
# counterfactual. The closure check: the DLAs of all nodes plus the remainder that no node
# owns (biases, position embeddings) reproduce the model's logit difference read from its
# own output.

# %%
lenses, rows = {}, []
for s in tqdm(exp.seeds, desc="logit lens"):
    for t in core:
        for n in compared:
            lens = logit_lens(exp.models(s, [n])[n], pools[s][t], shift=exp.pair.shift, batch_size=batch_size,
                              progress=False)
            lenses[(s, n, t)] = lens
            rows.append(lens.table().assign(seed=s, task=t, regime=regime[t], model=n,
                                            closure_error=lens.max_closure_error(),
                                            logit_diff=float(lens.logit_diff.mean())))
dla_table = pd.concat(rows, ignore_index=True)
print("max closure error (sum of DLAs + remainder - logit difference):", f"{dla_table.closure_error.max():.2e}")

fig, axes = plt.subplots(2, len(core), figsize=(3.2 * len(core), 0.45 * a.n_layers * 2 + 2.4), squeeze=False,
                         layout="constrained")
for c, t in enumerate(core):
    mats = {n: dla_grid(dla_table[(dla_table.seed == s0) & (dla_table.task == t) & (dla_table.model == n)], a)
            for n in ("arm", "mdm")}
    vmax = max(np.abs(m).max() for m in mats.values()) or 1.0
    for r, n in enumerate(("arm", "mdm")):
        ax = axes[r, c]
        im = ax.imshow(mats[n], cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", origin="lower")
        ax.set_xticks(range(a.n_heads + 1), [f"h{h}" for h in range(a.n_heads)] + ["MLP"], fontsize=6)
        ax.set_yticks(range(a.n_layers), range(a.n_layers), fontsize=6)
        ax.grid(False)
        ax.set_title(f"{t.replace('_', ' ')} · {plotting.MODEL_LABELS[n]}", fontsize=9)
        if c == 0:
            ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes[:, c].tolist(), shrink=0.6, location="bottom", label="mean DLA")
fig.suptitle(f"Direct logit attribution to correct − counterfactual at the read-out position (seed {s0})")
plotting.save_figure(fig, dla_table, "05_direct_logit_attribution", figures_dir)
plt.show()

# %% [markdown]
# ### The tokens the most important components promote (first seed)
#
# For each model's top `n_lens_components` heads and MLPs by circuit importance: its mean
# DLA, the token its logit-lens projection pushes up most on average, and, per example,
# whether the example's own answer is the component's top token (the share of examples
# where it is) and its median rank. Averaged logits can put a token on top that is no
# example's answer while the component promotes each example's answer; the per-example
# share says which.

# %%
lens_rows = []
for t in tqdm(core, desc="promoted tokens"):
    for n in ("arm", "mdm"):
        weights = pd.Series(importance_weights(graph, att[(s0, n, t)].edge_scores, K).numpy(),
                            index=model_components(graph))
        top = [c for c in weights.sort_values(ascending=False, kind="stable").index if weights[c] > 0][:n_lens_components]
        if not top:
            continue
        table = promoted_tokens(exp.models(s0, [n])[n], pools[s0][t], top, exp.tokenizer, k=n_promoted,
                                shift=exp.pair.shift, batch_size=batch_size, progress=False)
        mean_dla = dla_table[(dla_table.seed == s0) & (dla_table.task == t) & (dla_table.model == n)].set_index(
            "component").dla
        share = weights / weights.sum()
        for comp, sub in table.groupby("component", sort=False):
            lens_rows.append({"task": t, "model": n, "component": comp, "importance_share": float(share[comp]),
                              "importance_rank": top.index(comp) + 1, "dla": float(mean_dla[comp]),
                              "answer_top1_share": float(sub.answer_top1_share.iloc[0]),
                              "answer_rank": float(sub.answer_rank.iloc[0]),
                              "promoted_on_average": " ".join(sub.sort_values("rank").token.str.strip())})
lens_top = pd.DataFrame(lens_rows)
display(lens_top.round(3))
fig, axes = plt.subplots(2, len(core), figsize=(3.8 * len(core), 0.4 * n_lens_components * 2 + 2.5), squeeze=False)
for c, t in enumerate(core):
    for r, n in enumerate(("arm", "mdm")):
        ax = axes[r, c]
        sub = lens_top[(lens_top.task == t) & (lens_top.model == n)].sort_values("importance_rank")
        y = np.arange(len(sub))[::-1]
        ax.barh(y, sub.dla, color=plotting.MODEL_COLORS[n])
        for yy, row in zip(y, sub.itertuples()):
            ax.annotate(f"{row.component}: answer top-1 in {row.answer_top1_share:.0%}", (0, yy), fontsize=6,
                        va="center", xytext=(2, 0), textcoords="offset points")
        ax.axvline(0, color="k", lw=0.6)
        ax.set_yticks([])
        ax.set_title(f"{t.replace('_', ' ')} · {plotting.MODEL_LABELS[n]}", fontsize=9)
        ax.set_xlabel("mean DLA", fontsize=8)
fig.suptitle(f"Top-{n_lens_components} components by importance: DLA, and how often the example's answer is the "
             f"component's top token (seed {s0})", fontsize=10)
fig.tight_layout()
plotting.save_figure(fig, lens_top, "05_logit_lens_top_components", figures_dir)
plt.show()

# %% [markdown]
# ## 2 · How concentrated is the work?
#
# Two weights per head and MLP, recomputed in every bootstrap draw (seeds, then examples,
# the same examples for every model of a seed): **importance** (s(v) on the top-K circuit,
# re-selected per draw) and **alignment** (|mean DLA| to the answer). Claim 3 predicts for
# the MDM: a higher normalised entropy and effective number, a lower Gini and top-5 share;
# the scorecard reads the entropy's change against the null's.

# %%
MEASURES = ("entropy_norm", "effective_number", "gini", "top5")
conc_rows, score_rows = [], []
for t in tqdm(core, desc="concentration"):
    n_examples = {s: len(pools[s][t]) for s in exp.seeds}

    def stat(s, index, t=t):
        pick = slice(None) if index is None else index
        means = torch.stack([att[(s, n, t)].per_example[pick].mean(0) for n in compared])
        importance = stats.importance(means, K)[:, stats.model_components]  # as importance_weights, batched
        out = {}
        for i, n in enumerate(compared):
            for weight, w in (("importance", importance[i]),
                              ("alignment", alignment_weights(graph, lenses[(s, n, t)].dla[pick]))):
                c = concentration(w)
                for m in MEASURES:
                    out[f"{weight}/{m}/{n}"] = c[m]
        return out

    per_seed, draws = seed_bootstrap(stat, n_examples, n_boot, seed)
    for col in per_seed.columns:
        if col == "seed":
            continue
        weight, m, n = col.split("/")
        for row in per_seed[["seed", col]].itertuples(index=False):
            conc_rows.append({"task": t, "regime": regime[t], "weight": weight, "measure": m, "model": n,
                              "seed": row.seed, "value": row[1]})
    for weight in ("importance", "alignment"):
        col = {n: f"{weight}/entropy_norm/{n}" for n in compared}
        ps = pd.DataFrame({"mdm": per_seed[col["mdm"]] - per_seed[col["arm"]]})
        dr = pd.DataFrame({"mdm": draws[col["mdm"]] - draws[col["arm"]]})
        extra = {f"{n}_minus_arm": float((per_seed[col[n]] - per_seed[col["arm"]]).mean())
                 for n in compared if n not in ("arm", "mdm", "arm_continued")}
        name = f"normalised entropy of {weight}"
        if "arm_continued" not in compared:  # a real pair: no null, so no verdict
            score_rows.append(unreferenced_row("claim 3", t, regime[t], name, ps, dr, rule, extra))
            continue
        ps["null"] = per_seed[col["arm_continued"]] - per_seed[col["arm"]]
        dr["null"] = draws[col["arm_continued"]] - draws[col["arm"]]
        score_rows.append(scorecard_row("claim 3", t, regime[t], name, ps, dr, "effect", rule, 1, extra))
conc = pd.DataFrame(conc_rows)
display(conc[conc.measure.isin(["entropy_norm", "effective_number"])].pivot_table(
    index=["weight", "task"], columns=["measure", "model"], values="value").round(3))

fig, axes = plt.subplots(2, 2, figsize=(11, 6.4), squeeze=False)
for r, weight in enumerate(("importance", "alignment")):
    for c, m in enumerate(("entropy_norm", "effective_number")):
        ax = axes[r, c]
        for k, n in enumerate(compared):
            sub = conc[(conc.weight == weight) & (conc.measure == m) & (conc.model == n)]
            means = sub.groupby("task").value.mean().reindex(core)
            x = np.arange(len(core)) + (k - (len(compared) - 1) / 2) * 0.8 / len(compared)
            ax.bar(x, means, 0.8 / len(compared), color=plotting.RUN_COLORS[n], label=plotting.RUN_LABELS[n])
            for i, t in enumerate(core):
                v = sub[sub.task == t].value
                ax.scatter(np.full(len(v), x[i]), v, s=5, color="k", zorder=3)
        ax.set_xticks(range(len(core)), [t.replace("_", "\n") for t in core], fontsize=8)
        ax.set_title(f"{weight}: {m.replace('_', ' ')}", fontsize=9)
fig.suptitle("Concentration of the work over heads and MLPs (bars: mean over seeds; points: seeds)", fontsize=10)
plotting.legend_below(fig, axes[0, 0], height=0.06)
plotting.save_figure(fig, conc, "05_specialization", figures_dir)
plt.show()
scores = pd.DataFrame(score_rows)
if len(scores):
    plotting.save_table(scores, "05_scorecard_rows", figures_dir)
    display(scores[["claim", "task", "statistic", "mdm_minus_arm", "null_minus_arm", "excess", "ci_low", "ci_high",
                    "seeds_holding", "verdict"]].round(3))

# %% [markdown]
# ## 3 · Early-layer MLP neurons
#
# Neuron scores on each pool: the change of the logit difference when a neuron takes its
# corrupted value (integrated gradients over `neuron_ig_steps` points). First a check on
# `exact_neuron_examples` examples of the first seed: the same scores against exact
# single-neuron patching (one patched run per neuron), and completeness (the scores of a
# layer against the effect of patching the whole layer).

# %%
neuron_att, check_rows, scatter = {}, [], []
early = list(range(n_early))
for s in tqdm(exp.seeds, desc="neuron attribution"):
    for t in core:
        for n in ("arm", "mdm"):
            model, data = exp.models(s, [n])[n], pools[s][t]
            neuron_att[(s, n, t)] = neuron_attribution(model, data, early, "ig", neuron_ig_steps,
                                                       batch_size=batch_size, shift=exp.pair.shift, progress=False)
            if exact_neuron_examples and s == s0:
                sub = data.subset(range(min(exact_neuron_examples, len(data))))
                ig = neuron_attribution(model, sub, early, "ig", neuron_ig_steps, batch_size=batch_size,
                                        shift=exp.pair.shift, progress=False)
                exact = neuron_attribution(model, sub, early, "exact", batch_size=batch_size, shift=exp.pair.shift,
                                           progress=False)
                comp = ig.completeness()
                check_rows.append({"task": t, "model": n, "n_examples": len(sub),
                                   "spearman_ig_vs_exact": spearman(ig.scores.flatten(), exact.scores.flatten()),
                                   "sum_of_ig_scores": comp.sum_of_scores.sum(),
                                   "layers_patched_exact": comp.layer_patched.sum(),
                                   "completeness_error": abs(comp.sum_of_scores.sum() - comp.layer_patched.sum())
                                   / abs(comp.layer_patched.sum())})
                scatter.append(pd.DataFrame({"task": t, "model": n, "ig": ig.scores.flatten().tolist(),
                                             "exact": exact.scores.flatten().tolist()}))
if check_rows:
    checks = pd.DataFrame(check_rows)
    display(checks.round(4))
    scatter = pd.concat(scatter, ignore_index=True)
    fig, axes = plt.subplots(1, len(core), figsize=(3.2 * len(core), 3.2), squeeze=False)
    for ax, t in zip(axes[0], core):
        for n in ("arm", "mdm"):
            sub = scatter[(scatter.task == t) & (scatter.model == n)]
            rho = checks[(checks.task == t) & (checks.model == n)].spearman_ig_vs_exact.iloc[0]
            ax.scatter(sub.exact, sub.ig, s=4, alpha=0.5, color=plotting.MODEL_COLORS[n],
                       label=f"{plotting.MODEL_LABELS[n]} (ρ={rho:.2f})")
        lim = np.abs(scatter[scatter.task == t][["ig", "exact"]].to_numpy()).max()
        ax.plot([-lim, lim], [-lim, lim], color="0.5", lw=0.7)
        ax.set(title=t.replace("_", " "), xlabel="exact single-neuron patching", ylabel="integrated gradients")
        ax.legend(fontsize=7)
    fig.suptitle(f"Early-layer neuron scores: IG vs exact patching ({exact_neuron_examples} examples, seed {s0})",
                 fontsize=10)
    fig.tight_layout()
    plotting.save_figure(fig, scatter.merge(checks, on=["task", "model"]), "05_neuron_ig_vs_exact", figures_dir)
    plt.show()

# %% [markdown]
# ### The top neurons, what they fire on, and how selectively
#
# For each model, task and seed the `n_top_neurons` early neurons with the largest |score|,
# their top-activating token instances over the pool's clean and corrupted sequences, and
# the explanation: the candidate feature with the highest selectivity (1: the neuron's
# activation mass lies on that feature alone; 0: no more on it than its frequency).
# Features: the token itself, its position, and its role (read-out position, answer slot,
# where clean and corrupted differ, a repeated token, an answer appearing in the input).

# %%
explained = []
for s in tqdm(exp.seeds, desc="explanations"):
    for t in core:
        names, feats = token_features(pools[s][t], exp.tokenizer, min_support)
        for n in ("arm", "mdm"):
            top = neuron_att[(s, n, t)].top(n_top_neurons)
            acts = selected_activations(exp.models(s, [n])[n], pools[s][t], list(zip(top.layer, top.neuron)),
                                        batch_size, exp.pair.shift)
            table = explain_neurons(acts, list(top.name), pools[s][t], exp.tokenizer, names, feats, top_examples)
            explained.append(table.assign(seed=s, task=t, regime=regime[t], model=n, rank=range(1, len(top) + 1),
                                          score=top.score.to_numpy(), layer=top.layer.to_numpy(),
                                          kind=table.feature.map(feature_kind)))
explained = pd.concat(explained, ignore_index=True)
plotting.save_table(explained, "05_neuron_explanations", figures_dir)
for t in core:
    for n in ("arm", "mdm"):
        sub = explained[(explained.seed == s0) & (explained.task == t) & (explained.model == n)].head(2)
        print(f"{t} · {plotting.MODEL_LABELS[n]} (seed {s0})")
        for row in sub.itertuples():
            print(f"  {row.neuron} (score {row.score:+.3f}): {row.explanation}")

# %%
sel_rows = []
for t in core:
    for n in ("arm", "mdm"):
        by_seed = {s: explained[(explained.seed == s) & (explained.task == t) & (explained.model == n)]
                   .selectivity.to_numpy() for s in exp.seeds}
        sel_rows.append({"task": t, "regime": regime[t], "model": n, **mean_interval(by_seed, 1000, seed, level)})
selectivity_summary = pd.DataFrame(sel_rows)
display(selectivity_summary.round(3))
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 2]})
ax = axes[0]
for k, n in enumerate(("arm", "mdm")):
    sub = selectivity_summary[selectivity_summary.model == n].set_index("task").reindex(core)
    x = np.arange(len(core)) + (k - 0.5) * 0.38
    ax.bar(x, sub["mean"], 0.38, color=plotting.MODEL_COLORS[n], label=plotting.MODEL_LABELS[n])
    ax.errorbar(x, sub["mean"], yerr=[(sub["mean"] - sub.ci_low).clip(lower=0), (sub.ci_high - sub["mean"]).clip(lower=0)],
                fmt="none", color="k", capsize=3)
ax.set_xticks(range(len(core)), [t.replace("_", " ") for t in core], fontsize=8)
ax.set(ylabel="mean selectivity of the explanation", ylim=(0, 1),
       title=f"Top-{n_top_neurons} early neurons (95% interval over seeds and neurons)")
ax.legend(fontsize=8)
ax = axes[1]
kinds = ["token", "position", "role"]
counts = explained.pivot_table(index=["task", "model"], columns="kind", values="neuron", aggfunc="count",
                               fill_value=0).reindex(columns=kinds, fill_value=0)
shares = counts.div(counts.sum(axis=1), axis=0)
bottom = np.zeros(len(shares))
for kind, color in zip(kinds, ("#8c564b", "#7f7f7f", "#2ca02c")):
    ax.bar(range(len(shares)), shares[kind], bottom=bottom, color=color, label=kind)
    bottom += shares[kind].to_numpy()
ax.set_xticks(range(len(shares)), [f"{t.replace('_', ' ')}\n{plotting.MODEL_LABELS[m]}" for t, m in shares.index],
              fontsize=6, rotation=45, ha="right")
ax.set(ylabel="share of top neurons", title="What the explanations name (all seeds)")
ax.legend(fontsize=7)
fig.tight_layout()
plotting.save_figure(fig, explained.drop(columns=["top_contexts"]), "05_neuron_selectivity", figures_dir)
plt.show()

# %% [markdown]
# ## Summary
#
# The claim-3 verdicts are the scorecard's rows (`figures/05_scorecard_rows.csv`, assembled in
# notebook 07); the neuron selectivities are reported beside them, with their intervals.

# %%
if len(scores):
    for r in scores.itertuples():
        print(f"{r.task:13s} {r.statistic}: MDM {r.mdm_minus_arm:+.3f}, null {r.null_minus_arm:+.3f}, excess "
              f"{r.excess:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] ({r.seeds_holding}/{r.n_seeds} seeds) -> {r.verdict}")
