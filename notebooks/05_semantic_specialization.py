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
# Here we measure it, on the same pools and attributions as notebooks 02-04:
#
# 1. **Logit lens of components.** Each head's and MLP's output at the read-out position
#    (slot - 1), sent through the final norm (its scale frozen at the whole residual's,
#    the standard direct-logit-attribution convention) and the unembedding: its direct
#    logit attribution (DLA) to the correct vs the counterfactual answer, and the tokens
#    it promotes. The pieces add up to the model's logit difference (checked below).
# 2. **Specialization numbers.** Over heads and MLPs: entropy (and its normalised form),
#    effective number exp(entropy), Gini, and the share of the top 1 / 5 / 10, for two
#    weights per component: its circuit importance (notebook 03's s(v) on the top-K
#    circuit) and its answer alignment |DLA|. Bootstrap intervals over examples, the
#    MDM - ARM difference resampled jointly. A verdict per task and regime.
# 3. **Early-layer neurons.** Neuron-level attribution of the early MLPs (integrated
#    gradients between the layer's corrupted and clean activations, checked against exact
#    single-neuron patching), the top neurons of each model, their top-activating tokens
#    in the task data, an automatic one-line explanation (the input feature its
#    activation concentrates on) and its selectivity; the selectivity distributions of
#    ARM and MDM.

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
k_fraction = 0.1
k_edges = 0  # a fixed K when positive; 0: k_fraction of all edges (embedded), 1000 (real pairs)
early_layers = 0  # 0: the first half
n_boot = 200  # bootstrap resamples over examples
n_lens_components = 6  # top components per model (by circuit importance) whose promoted tokens are shown
n_promoted = 5  # promoted tokens listed per component
neuron_ig_steps = 8
n_top_neurons = 20  # top-attributed early neurons explained per model and task
exact_neuron_examples = -1  # examples for the IG-vs-exact neuron check; 0 skips it; -1: 16 (embedded), 0 (real pairs)
top_examples = 5  # top-activating token instances listed per neuron
min_support = 5  # a feature must hold on at least this many token instances to explain a neuron

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display
from tqdm import tqdm

from mechshift_utils import tasks
from mechshift_utils.analysis.comparison import early_layer_count
from mechshift_utils.analysis.logit_lens import dla_grid, logit_lens, promoted_tokens
from mechshift_utils.analysis.neurons import (explain_neurons, feature_kind, neuron_attribution, selected_activations,
                                              token_features)
from mechshift_utils.analysis.specialization import (alignment_weights, bootstrap_compare, claim3_table,
                                                     importance_weights, model_components, regime_verdict)
from mechshift_utils.analysis.stats import bootstrap_ci, spearman
from mechshift_utils.attribution.tracing import circuit_size, resolve_batch_size, trace_pair
from mechshift_utils.core.validation import check_non_negative_int, check_positive_int
from mechshift_utils.notebook import plotting
from mechshift_utils.notebook.params import NotebookParams, figures_dir_for
from mechshift_utils.notebook.pipeline import prepare_pair

params = NotebookParams(model_pair, seed, device, smoke, dtype, device_map).validated()
figures_dir = figures_dir_for(figures_dir, smoke)  # smoke runs leave the committed figures alone
if exact_neuron_examples == -1:  # one patched pass per neuron: affordable for 1024 neurons, not for 265k
    exact_neuron_examples = 16 if params.model_pair == "embedded" else 0
if smoke:  # tiny models: the exact check is cheap whatever the pair
    pool_limit, ig_steps, n_boot = min(pool_limit, 8), min(ig_steps, 2), min(n_boot, 10)
    neuron_ig_steps, n_top_neurons, exact_neuron_examples = 2, min(n_top_neurons, 4), 4
    min_support = 1
for name, value in (("pool_limit", pool_limit), ("n_boot", n_boot),
                    ("n_lens_components", n_lens_components), ("n_promoted", n_promoted),
                    ("neuron_ig_steps", neuron_ig_steps), ("n_top_neurons", n_top_neurons),
                    ("top_examples", top_examples), ("min_support", min_support)):
    check_positive_int(name, value)
check_non_negative_int("exact_neuron_examples", exact_neuron_examples)
plotting.use_style()
pair, run = prepare_pair(params, artifacts_dir)
order = list(tasks.TASK_NAMES)
regime = {t: tasks.get_task(t).regime for t in order}
roles = ("arm", "mdm")
pools, att, graph = trace_pair(pair, run.run_dir, order, pool_limit, ig_steps, batch_size,
                               fallback_seed=seed if smoke else None)
a = graph.arch
n_early = early_layer_count(a.n_layers, early_layers)
batch_size = resolve_batch_size(pair, batch_size, pools, ig_steps)  # for this notebook's own passes
K = circuit_size(graph, k_edges, k_fraction, params.model_pair)
components = model_components(graph)
print(f"K = {K}; {len(components)} heads and MLPs; early layers: < {n_early}; "
      f"pools: {', '.join(f'{t}={len(pools[t])}' for t in order)}")

# %% [markdown]
# ## 1 · Logit lens: what each component writes toward the answer
#
# Mean DLA to logit(correct) - logit(counterfactual) of every head (columns h0, h1, ...)
# and MLP (last column) per layer; red pushes the right answer, blue the counterfactual.
# The closure check: the DLAs of all nodes plus the remainder that no node owns (biases,
# position embeddings) reproduce the model's logit difference read from its own output.

# %%
lenses, rows = {}, []
for task in order:
    for role in roles:
        lens = logit_lens(pair.model(role), pools[task], shift=pair.shift, batch_size=batch_size, progress=False)
        lenses[(role, task)] = lens
        rows.append(lens.table().assign(task=task, regime=regime[task], model=role,
                                        closure_error=lens.max_closure_error(),
                                        remainder=float(lens.remainder.mean()),
                                        logit_diff=float(lens.logit_diff.mean())))
dla_table = pd.concat(rows, ignore_index=True)
print("max closure error (sum of DLAs + remainder - logit difference):",
      f"{dla_table.closure_error.max():.2e}")
display(dla_table.groupby(["task", "model"]).agg(logit_diff=("logit_diff", "first"),
                                                 embeddings=("dla", lambda s: s.iloc[0]),
                                                 remainder=("remainder", "first")).round(3))

fig, axes = plt.subplots(2, len(order), figsize=(3.2 * len(order), 0.45 * a.n_layers * 2 + 2.4), squeeze=False,
                         layout="constrained")
for c, task in enumerate(order):
    mats = {role: dla_grid(dla_table[(dla_table.task == task) & (dla_table.model == role)], a) for role in roles}
    vmax = max(np.abs(m).max() for m in mats.values()) or 1.0
    for r, role in enumerate(roles):
        ax = axes[r, c]
        im = ax.imshow(mats[role], cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", origin="lower")
        ax.set_xticks(range(a.n_heads + 1), [f"h{h}" for h in range(a.n_heads)] + ["MLP"], fontsize=6)
        ax.set_yticks(range(a.n_layers), range(a.n_layers), fontsize=6)
        ax.grid(False)
        ax.set_title(f"{task} · {plotting.MODEL_LABELS[role]}", fontsize=9)
        if c == 0:
            ax.set_ylabel("layer")
    fig.colorbar(im, ax=axes[:, c].tolist(), shrink=0.6, location="bottom", label="mean DLA")
fig.suptitle("Direct logit attribution to correct - counterfactual at the read-out position")
plotting.save_figure(fig, dla_table, "05_direct_logit_attribution", figures_dir)
plt.show()

# %% [markdown]
# ### The tokens the most important components promote
#
# For each model's top `n_lens_components` heads and MLPs by circuit importance: its mean
# DLA, the tokens its logit-lens projection pushes up most (averaged over the pool), and
# the median rank of the correct answer among all tokens in that projection (1 = it is
# the component's top token).

# %%
lens_rows = []
for task in tqdm(order, desc="promoted tokens"):
    for role in roles:
        weights = pd.Series(importance_weights(graph, att[(role, task)].edge_scores, K).numpy(), index=components)
        top = [c for c in weights.sort_values(ascending=False, kind="stable").index if weights[c] > 0]
        top = top[:n_lens_components]
        if not top:
            continue
        table = promoted_tokens(pair.model(role), pools[task], top, pair.tokenizer, k=n_promoted,
                                shift=pair.shift, batch_size=batch_size, progress=False)
        mean_dla = dla_table[(dla_table.task == task) & (dla_table.model == role)].set_index("component").dla
        share = weights / weights.sum()
        for comp, sub in table.groupby("component", sort=False):
            lens_rows.append({"task": task, "regime": regime[task], "model": role, "component": comp,
                              "importance_share": float(share[comp]), "importance_rank": top.index(comp) + 1,
                              "dla": float(mean_dla[comp]), "answer_rank": float(sub.answer_rank.iloc[0]),
                              "promoted": " ".join(sub.sort_values("rank").token.str.strip())})
lens_top = pd.DataFrame(lens_rows)
display(lens_top.round(3))

fig, axes = plt.subplots(2, len(order), figsize=(3.6 * len(order), 0.4 * n_lens_components * 2 + 2.5),
                         squeeze=False)
for c, task in enumerate(order):
    for r, role in enumerate(roles):
        ax = axes[r, c]
        sub = lens_top[(lens_top.task == task) & (lens_top.model == role)].sort_values("importance_rank")
        y = np.arange(len(sub))[::-1]
        ax.barh(y, sub.dla, color=plotting.MODEL_COLORS[role])
        for yy, row in zip(y, sub.itertuples()):
            ax.annotate(f"{row.component}: {row.promoted.split()[0] if row.promoted else ''} "
                        f"(answer rank {row.answer_rank:.0f})", (0, yy), fontsize=6, va="center",
                        xytext=(2, 0), textcoords="offset points")
        ax.axvline(0, color="k", lw=0.6)
        ax.set_yticks([])
        ax.set_title(f"{task} · {plotting.MODEL_LABELS[role]}", fontsize=9)
        ax.set_xlabel("mean DLA", fontsize=8)
fig.suptitle(f"Top-{n_lens_components} components by importance: DLA, top promoted token, rank of the answer",
             y=1.01)
fig.tight_layout()
plotting.save_figure(fig, lens_top, "05_logit_lens_top_components", figures_dir)
plt.show()

# %% [markdown]
# ## 2 · How concentrated is the work?
#
# Two weights per head and MLP, each resampled over examples (the same draw for both
# models): **importance** (s(v) on the top-K circuit, re-selected per draw) and
# **alignment** (|mean DLA| to the answer). Then entropy, effective number, Gini and the
# top-1/5/10 shares. Claim 3 predicts for the MDM: higher entropy and effective number,
# lower Gini and top shares.

# %%
spec_rows = []
for task in tqdm(order, desc="bootstrap"):
    n = len(pools[task])
    per_example = {role: att[(role, task)].per_example for role in roles}
    dla = {role: lenses[(role, task)].dla for role in roles}
    quantities = {
        "importance": lambda role, idx: importance_weights(graph, per_example[role][idx].mean(0), K),
        "alignment": lambda role, idx: alignment_weights(graph, dla[role][idx]),
    }
    for quantity, fn in quantities.items():
        table = bootstrap_compare(n, fn, n_boot, seed)
        spec_rows.append(table.assign(task=task, regime=regime[task], quantity=quantity))
spec = pd.concat(spec_rows, ignore_index=True)
display(spec[spec.measure.isin(["entropy_norm", "effective_number", "gini", "top5"])]
        .pivot_table(index=["quantity", "task"], columns=["measure", "model"], values="value").round(3))

shown = ["entropy_norm", "effective_number", "gini", "top1", "top5", "top10"]
fig, axes = plt.subplots(2, len(shown), figsize=(2.8 * len(shown), 6.2), squeeze=False)
for r, quantity in enumerate(("importance", "alignment")):
    for c, measure in enumerate(shown):
        ax = axes[r, c]
        for k_role, role in enumerate(roles):
            sub = spec[(spec.quantity == quantity) & (spec.measure == measure) & (spec.model == role)]
            sub = sub.set_index("task").loc[order]
            x = np.arange(len(order)) + (k_role - 0.5) * 0.38
            ax.bar(x, sub.value, 0.38, color=plotting.MODEL_COLORS[role], label=plotting.MODEL_LABELS[role])
            ax.errorbar(x, sub.value, yerr=[(sub.value - sub.ci_low).clip(lower=0),
                                            (sub.ci_high - sub.value).clip(lower=0)], fmt="none", color="k",
                        capsize=2)
        ax.set_xticks(range(len(order)), [t.replace("_", "\n") for t in order], fontsize=7)
        ax.set_title(f"{quantity}: {measure}", fontsize=9)
axes[0, 0].legend(fontsize=8)
fig.suptitle("Concentration of the work over heads and MLPs (95% bootstrap CI over examples)", y=1.01)
fig.tight_layout()
plotting.save_figure(fig, spec, "05_specialization", figures_dir)
plt.show()

# %% [markdown]
# ## Verdict on claim 3
#
# Per task and weight, from the MDM - ARM differences of three measures (normalised
# entropy, Gini, top-5 share): **holds** when all three say the MDM is more spread out
# with intervals excluding zero, **reversed** when all three say it is more concentrated,
# **mixed** when they disagree, **no clear difference** otherwise. A regime's verdict is
# its tasks' verdict when they agree.

# %%
verdicts = claim3_table(spec, regime)
verdicts.to_csv(f"{figures_dir}/05_claim3_verdicts.csv", index=False)
display(verdicts)
for reg in (tasks.PREFIX_DOMINANT, tasks.GLOBALLY_CONSTRAINED):
    for quantity in ("importance", "alignment"):
        sub = verdicts[(verdicts.regime == reg) & (verdicts.quantity == quantity)]
        print(f"{reg}, {quantity}: claim 3 {regime_verdict(list(sub.verdict))} "
              f"({'; '.join(f'{t}: {v}, entropy {e:+.3f} {ci}' for t, v, e, ci in zip(sub.task, sub.verdict, sub.entropy_norm_mdm_minus_arm, sub.entropy_norm_ci))})")

# %% [markdown]
# ## 3 · Early-layer MLP neurons
#
# Neuron scores on each pool: the change of the logit difference when a neuron takes its
# corrupted value (integrated gradients over `neuron_ig_steps` points). First a check on
# `exact_neuron_examples` examples: the same scores against exact single-neuron patching
# (one patched run per neuron), and completeness (the scores of a layer sum to the effect
# of patching the whole layer).

# %%
neuron_att, check_rows, scatter = {}, [], []
early = list(range(n_early))
for task in tqdm(order, desc="neuron attribution"):
    for role in roles:
        model, data = pair.model(role), pools[task]
        neuron_att[(role, task)] = neuron_attribution(model, data, early, "ig", neuron_ig_steps,
                                                      batch_size=batch_size, shift=pair.shift, progress=False)
        if exact_neuron_examples:
            sub = data.subset(range(min(exact_neuron_examples, len(data))))
            ig = neuron_attribution(model, sub, early, "ig", neuron_ig_steps, batch_size=batch_size,
                                    shift=pair.shift, progress=False)
            exact = neuron_attribution(model, sub, early, "exact", batch_size=batch_size, shift=pair.shift,
                                       progress=False)
            comp = ig.completeness()
            check_rows.append({"task": task, "model": role, "n_examples": len(sub),
                               "spearman_ig_vs_exact": spearman(ig.scores.flatten(), exact.scores.flatten()),
                               "sum_of_ig_scores": comp.sum_of_scores.sum(),
                               "layers_patched_exact": comp.layer_patched.sum()})
            scatter.append(pd.DataFrame({"task": task, "model": role, "ig": ig.scores.flatten().tolist(),
                                         "exact": exact.scores.flatten().tolist()}))
if check_rows:
    checks = pd.DataFrame(check_rows)
    display(checks.round(4))
    scatter = pd.concat(scatter, ignore_index=True)
    fig, axes = plt.subplots(1, len(order), figsize=(3.2 * len(order), 3.2), squeeze=False)
    for ax, task in zip(axes[0], order):
        for role in roles:
            sub = scatter[(scatter.task == task) & (scatter.model == role)]
            rho = checks[(checks.task == task) & (checks.model == role)].spearman_ig_vs_exact.iloc[0]
            ax.scatter(sub.exact, sub.ig, s=4, alpha=0.5, color=plotting.MODEL_COLORS[role],
                       label=f"{plotting.MODEL_LABELS[role]} (ρ={rho:.2f})")
        lim = np.abs(scatter[scatter.task == task][["ig", "exact"]].to_numpy()).max()
        ax.plot([-lim, lim], [-lim, lim], color="0.5", lw=0.7)
        ax.set(title=task, xlabel="exact single-neuron patching", ylabel="integrated gradients")
        ax.legend(fontsize=7)
    fig.suptitle(f"Early-layer neuron scores: IG vs exact patching ({exact_neuron_examples} examples each)", y=1.03)
    fig.tight_layout()
    plotting.save_figure(fig, scatter, "05_neuron_ig_vs_exact", figures_dir)
    plt.show()

# %% [markdown]
# ### The top neurons, what they fire on, and how selectively
#
# For each model and task the `n_top_neurons` early neurons with the largest |score|,
# their activations over the pool's clean and corrupted sequences, their top-activating
# token instances, and the explanation: the candidate feature with the highest
# selectivity (1: the neuron's activation mass lies on that feature alone; 0: no more on
# it than its frequency). The features are the token itself, its position, and its role
# (read-out position, answer slot, where clean and corrupted differ, a repeated token,
# the correct or counterfactual answer appearing in the input).

# %%
explained = []
for task in tqdm(order, desc="explanations"):
    names, feats = token_features(pools[task], pair.tokenizer, min_support)
    for role in roles:
        top = neuron_att[(role, task)].top(n_top_neurons)
        acts = selected_activations(pair.model(role), pools[task], list(zip(top.layer, top.neuron)),
                                    batch_size, pair.shift)
        table = explain_neurons(acts, list(top.name), pools[task], pair.tokenizer, names, feats, top_examples)
        explained.append(table.assign(task=task, regime=regime[task], model=role, rank=range(1, len(top) + 1),
                                      score=top.score.to_numpy(), layer=top.layer.to_numpy(),
                                      kind=table.feature.map(feature_kind)))
explained = pd.concat(explained, ignore_index=True)
explained.to_csv(f"{figures_dir}/05_neuron_explanations.csv", index=False)
for task in order:
    for role in roles:
        sub = explained[(explained.task == task) & (explained.model == role)].head(3)
        print(f"{task} · {plotting.MODEL_LABELS[role]}")
        for row in sub.itertuples():
            print(f"  {row.neuron} (score {row.score:+.3f}): {row.explanation}")

# %%
sel_rows = []
for task in order:
    for role in roles:
        values = explained[(explained.task == task) & (explained.model == role)].selectivity
        mean, low, high = bootstrap_ci(values, n_boot, seed)
        sel_rows.append({"task": task, "regime": regime[task], "model": role, "mean_selectivity": mean,
                         "ci_low": low, "ci_high": high, "n_neurons": len(values)})
selectivity_summary = pd.DataFrame(sel_rows)
display(selectivity_summary.round(3))
display(explained.pivot_table(index=["task", "model"], columns="kind", values="neuron", aggfunc="count",
                              fill_value=0))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 2]})
ax = axes[0]
for k_role, role in enumerate(roles):
    for i, task in enumerate(order):
        values = explained[(explained.task == task) & (explained.model == role)].selectivity.to_numpy()
        x = i + (k_role - 0.5) * 0.38
        ax.boxplot([values], positions=[x], widths=0.3, showfliers=False,
                   medianprops={"color": plotting.MODEL_COLORS[role]})
        jitter = np.random.default_rng(seed).uniform(-0.08, 0.08, len(values))
        ax.scatter(x + jitter, values, s=9, color=plotting.MODEL_COLORS[role], alpha=0.7,
                   label=plotting.MODEL_LABELS[role] if i == 0 else None)
ax.set_xticks(range(len(order)), order, fontsize=8)
ax.set(ylabel="selectivity of the explanation", ylim=(-0.05, 1.05),
       title=f"Top-{n_top_neurons} early neurons per model: selectivity")
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
ax.set_xticks(range(len(shares)), [f"{t}\n{plotting.MODEL_LABELS[m]}" for t, m in shares.index], fontsize=6)
ax.set(ylabel="share of top neurons", title="What the explanations name")
ax.legend(fontsize=7)
fig.tight_layout()
plotting.save_figure(fig, explained.drop(columns=["top_contexts"]), "05_neuron_selectivity", figures_dir)
plt.show()

# %% [markdown]
# ## Summary
#
# The numbers behind the verdicts are in `figures/05_claim3_verdicts.csv` and
# `05_specialization.csv`; neuron explanations with their top contexts in
# `05_neuron_explanations.csv`. The README quotes them for the embedded pair.

# %%
summary = verdicts.pivot_table(index="task", columns="quantity", values="verdict", aggfunc="first")
summary["regime"] = [regime[t] for t in summary.index]
summary["mean selectivity ARM / MDM"] = [
    " / ".join(f"{selectivity_summary[(selectivity_summary.task == t) & (selectivity_summary.model == r)].mean_selectivity.iloc[0]:.2f}"
               for r in roles) for t in summary.index]
display(summary)
