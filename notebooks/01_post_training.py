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
# # 01 · Post-training an ARM into an MDM
#
# Kong, Lee & Jo ask whether a masked diffusion model (MDM) post-trained from an
# autoregressive model (ARM) learns new computation or reuses the ARM's circuits.
# Before any circuit can be compared, we need the models and the examples they solve.
# This notebook
#
# 1. shows the tasks in the exact token format the models read, and what each model can
#    see at the position where its answer is read,
# 2. trains the embedded organism for every seed: an ARM (a 6-layer GPT-2) from scratch,
#    its MDM (the DiffuGPT recipe), and the controls that change one factor of the recipe,
# 3. scores every model on held-out examples (never seen in training) and on training ones,
# 4. checks that the information-flow tasks do what they are built for, and follows
#    accuracy along post-training,
# 5. saves each seed's pools, which notebooks 02-07 trace.
#
# The unit of evidence is a trained model: every number below is a mean over seeds with
# an interval from a hierarchical bootstrap (seeds, then examples inside each seed).

# %% tags=["parameters"]
model_pair = "embedded"  # a real pair (README), or the path of a pair .json file
seed = 0  # the first seed
seeds = 0  # trained models per recipe (seeds seed, seed+1, ...); 0: 3 for the embedded pair, 1 for a real pair
device = "auto"  # "auto": the GPU when present
dtype = "auto"  # real pairs: "auto" (bfloat16 on a GPU, float32 on the CPU), "float32", "bfloat16"
device_map = ""  # real pairs: "pair" puts the ARM and the MDM on two GPUs
workers = 0  # parallel training processes (embedded pair); 0: one per core. The numbers do not depend on it
smoke = False  # tiny sizes (tests); the numbers then mean nothing
artifacts_dir = "../artifacts"
figures_dir = "../figures"
n_eval = 0  # held-out evaluation examples per task; 0: 400 for the embedded pair, 1000 for a real pair
n_eval_train = 200  # training-split examples per task (embedded pair): how much of the accuracy is memory
n_eval_curve = 200  # held-out examples per task for accuracy along post-training (embedded pair)
pool_size = 500  # at most this many examples per task are kept in a pool (the paper's 500)
n_boot = 500  # bootstrap draws for the intervals over seeds and examples

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from mechshift_utils import tasks
from mechshift_utils.analysis.seeds import mean_interval
from mechshift_utils.core.validation import check_positive_int
from mechshift_utils.evaluation.accuracy import (accuracy_along_post_training, build_pools, chance_levels,
                                                 dropped_table, eval_sets, evaluate_models, variant_logit_diffs)
from mechshift_utils.models import load_pair_tokenizer
from mechshift_utils.models.embedded import DENSE, configs_for
from mechshift_utils.notebook import plotting
from mechshift_utils.notebook.params import NotebookParams, figures_dir_for
from mechshift_utils.notebook.pipeline import prepare_experiment, seed_list
from mechshift_utils.tasks.countdown import target_variants
from mechshift_utils.tasks.registry import information_table

params = NotebookParams(model_pair, seed, device, smoke, dtype, device_map, seeds, workers).validated()
figures_dir = figures_dir_for(figures_dir, smoke)  # smoke runs leave the committed figures alone
real_pair = params.model_pair != "embedded"
n_eval = n_eval or (1000 if real_pair else 400)
if smoke:
    n_eval, n_eval_train, n_eval_curve, n_boot = min(n_eval, 24), min(n_eval_train, 12), min(n_eval_curve, 12), 20
for name, value in (("n_eval", n_eval), ("n_eval_train", n_eval_train), ("n_eval_curve", n_eval_curve),
                    ("pool_size", pool_size), ("n_boot", n_boot)):
    check_positive_int(name, value)
plotting.use_style()
pd.set_option("display.width", 200, "display.max_colwidth", 120)
print(f"seeds {seed_list(params)}")

# %% [markdown]
# ## The tasks, and what each model sees at the read position
#
# Two regimes, as in the paper. **Prefix-dominant**: everything needed precedes the
# answer slot (IOI, Greater-Than). **Globally constrained**: the answer needs a plan
# toward a later constraint (Countdown: the first step must leave numbers that still
# reach the target) or information from both sides of a blank (Semantic Infilling: the
# place before the blank narrows the animal to four, the sound after it picks one).
#
# Both models read the *same* token sequence; answer slots hold `[MASK]`, and the logits
# for slot *i* are read at position *i − 1* (the shift DiffuGPT, DiffuLLaMA and Dream keep).
# At that position the ARM has read only what precedes the slot; the MDM reads both sides.
# So whether a task tests the globally constrained regime is a matter of where its
# decisive evidence lies, which the table makes explicit. The paper's four tasks, as the
# ARM must be able to solve them, put the evidence before the slot (Countdown's target is in
# the input; the restated Infilling repeats the blank at the end): at the read position the
# two models have the same evidence. Two variants move it after the slot: **countdown_late**
# corrupts only the target's copy that closes the solution, and **infilling_in_place** asks
# for the blank itself, with the decisive sound right after it. The ARM cannot see either
# change; any effect on the MDM is its use of the later context.
#
# Every sequence of a task has the same length, but filler of random length before and
# after the task's sentence (and templates of different lengths) move the answer slot, so
# no task can be solved from absolute positions. Held-out entities (IOI name pairs,
# Greater-Than century and start year, Countdown number triples, Infilling place and sound)
# never occur in training.

# %%
tokenizer = load_pair_tokenizer(params.model_pair)  # the pair's own tokenizer decides the form it scores
task_names = list(tasks.task_names_for(tokenizer))
join = " ".join if tasks.is_word_level(tokenizer) else "".join
rows = []
for name in task_names:
    ex = tasks.task_examples(name, 1, seed, tokenizer)[0]
    rows.append({"task": name, "regime": ex.regime, "clean": join(ex.clean[1:]), "corrupted": join(ex.corrupted[1:]),
                 "answer slots": ex.answer_positions, "correct": join(ex.correct),
                 "counterfactual": join(ex.counterfactual)})
display(pd.DataFrame(rows).set_index("task"))
info = information_table(task_names)
display(info.set_index("task"))
plotting.save_table(info, "01_information_at_read_position", figures_dir)

# %% [markdown]
# ## Train the ARMs, post-train the MDMs and the controls
#
# The ARM is a GPT-2 (transformers' `GPT2LMHeadModel`, 6 layers, 4 heads, width 64) trained
# from scratch with next-token loss on freshly sampled training-split sequences of the task
# mixture (answers written in). The MDM starts from the ARM's weights: each step samples
# t ~ U(10⁻³, 1), masks each token with probability t, and scores the masked tokens with
# cross-entropy weighted 1/t (normalised by the masked count), logits at *j − 1* predicting
# token *j*; the attention mask is causal OR Bernoulli(step / anneal_steps), so it opens from
# causal to full. Beside it, from the same ARM with the same batches, noise, steps, schedule
# and seed, one factor changed each: `arm_continued` (next-token loss, causal: the null of no
# mechanism shift), `mdm_causal` (the masked loss with attention kept causal), `mdm_scratch`
# (the MDM recipe from a random initialisation). `step0` is the ARM's weights read with full
# attention, and `arm_twin` the ARM of another seed. Runs are cached under `artifacts/` by a
# hash of their configuration, resume after an interruption, and train in parallel processes
# of one thread each (so the numbers do not depend on the number of processes).

# %%
start = time.perf_counter()
exp = prepare_experiment(params, artifacts_dir)
print(f"pair: {exp.pair.name}; seeds {exp.seeds}; models per seed: {', '.join(exp.model_names())}; "
      f"ready in {time.perf_counter() - start:.0f} s")
if exp.embedded:
    arm_cfg, post_cfg = configs_for(smoke)
    steps = {"arm": arm_cfg.steps, **{n: post_cfg.steps for n in post_cfg.runs}}
    timing = pd.DataFrame([{"seed": r.seed, "run": name, "seconds": sec, "steps": steps[name],
                            "ms_per_step": 1000 * sec / steps[name]} for r in exp.runs for name, sec in r.seconds.items()])
    plotting.save_table(timing, "01_training_time", figures_dir)
    display(timing.pivot_table(index="run", values=["seconds", "ms_per_step"], aggfunc="mean").round(1))
    print(f"training time summed over runs: {timing.seconds.sum():.0f} s (one thread each; the runs of a "
          f"seed after its ARM share the processes)")
else:
    print(f"{exp.pair.name}: loaded, not trained here; pools and attributions go to {exp.run_dir(exp.seeds[0])}")

# %%
if exp.embedded:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    rows = []
    for r in exp.runs:
        log = r.logs["arm"]
        window = max(1, len(log) // 40)
        smooth = log.loss.rolling(window, min_periods=1).mean()
        axes[0].plot(log.step, smooth, color=plotting.MODEL_COLORS["arm"], alpha=0.8, lw=1,
                     label=f"ARM, seed {r.seed}")
        rows.append(pd.DataFrame({"seed": r.seed, "run": "arm", "step": log.step, "loss": log.loss,
                                  "loss_smoothed": smooth}))
        for name in post_cfg.runs:
            log = r.logs[name]
            smooth = log.loss.rolling(window, min_periods=1).mean()
            axes[1].plot(log.step, smooth, color=plotting.RUN_COLORS[name], alpha=0.8, lw=1,
                         label=plotting.RUN_LABELS[name] if r.seed == exp.seeds[0] else None)
            rows.append(pd.DataFrame({"seed": r.seed, "run": name, "step": log.step, "loss": log.loss,
                                      "loss_smoothed": smooth, "anneal_ratio": log.anneal_ratio}))
    axes[0].set(xlabel="training step", ylabel="next-token loss", yscale="log", title="ARM training, every seed")
    axes[1].set(xlabel="post-training step", ylabel="loss of the run's objective", yscale="log",
                title="Post-training and controls (every seed)")
    axes[1].axvline(post_cfg.anneal_steps, color="k", ls="--", lw=0.8, label="attention fully open")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    plotting.save_figure(fig, pd.concat(rows, ignore_index=True), "01_training_curves", figures_dir)
    plt.show()

# %% [markdown]
# ## Accuracy on held-out and training examples
#
# Single-token answers: the argmax at the slot. Countdown's three-token first step: the
# ARM-like models write left to right; the MDM-like ones unmask the slot they are most
# confident of first. An answer counts when it is *any* right answer. Chance is a uniform
# guess among the answers the format allows (IOI: the two names; Greater-Than: any year;
# Countdown: any first step on two of the numbers; Infilling: any of the 16 animals).
# Points are seeds; bars the mean over seeds, with its hierarchical 95% interval.

# %%
names = [n for n in exp.model_names() if n != "arm_twin"]  # arm_twin is another seed's ARM: already scored
splits = ["heldout"] + (["train"] if exp.embedded else [])
score_rows, pools_rows, eval_data = [], [], {}
for s in exp.seeds:
    models = exp.models(s, names)
    for split in splits:
        n = n_eval if split == "heldout" else n_eval_train
        data = eval_sets(exp.tokenizer, n, s, task_names, mask_token_id=exp.pair.mask_token_id, split=split)
        if real_pair:
            display(dropped_table(data))  # examples this tokenizer cannot score position by position
        scores, _ = evaluate_models(models, {n_: exp.decoding(n_) for n_ in names}, data, exp.tokenizer,
                                    exp.pair.shift, progress=False)
        score_rows.append(scores.assign(seed=s, split=split))
        if split == "heldout":
            eval_data[s] = data
            pools = build_pools(scores[scores.model.isin(["arm", "mdm"])], data, exp.run_dir(s) / "pools",
                                max_size=pool_size)
            pools_rows.append(pools.assign(seed=s))
scores = pd.concat(score_rows, ignore_index=True)
pools = pd.concat(pools_rows, ignore_index=True)
chance = chance_levels(eval_data[exp.seeds[0]])

acc_rows = []
for (split, task, model), sub in scores.groupby(["split", "task", "model"], sort=False):
    by_seed = {s: g.correct.to_numpy() for s, g in sub.groupby("seed")}
    acc_rows.append({"split": split, "task": task, "regime": sub.regime.iloc[0], "model": model,
                     **mean_interval(by_seed, n_boot, seed),
                     "mean_logit_diff": sub.logit_diff.mean(), "n_per_seed": len(sub) // len(by_seed)})
accuracy = pd.DataFrame(acc_rows)
accuracy = accuracy.merge(chance, on="task", how="left")
per_seed_acc = scores.groupby(["split", "task", "model", "seed"], sort=False).correct.mean().rename("accuracy").reset_index()
display(accuracy.pivot_table(index=["task", "split"], columns="model", values="mean").loc[task_names].round(3))

# %%
shown = [n for n in ("arm", "mdm", "arm_continued", "mdm_causal", "mdm_scratch", "step0") if n in names]
fig, axes = plt.subplots(len(splits), 1, figsize=(11, 3.4 * len(splits)), squeeze=False)
width = 0.8 / len(shown)
for ax, split in zip(axes[:, 0], splits):
    for k, name in enumerate(shown):
        sub = accuracy[(accuracy.split == split) & (accuracy.model == name)].set_index("task").reindex(task_names)
        x = np.arange(len(task_names)) + (k - (len(shown) - 1) / 2) * width
        ax.bar(x, sub["mean"], width, color=plotting.RUN_COLORS[name], label=plotting.RUN_LABELS[name])
        ax.errorbar(x, sub["mean"], yerr=[(sub["mean"] - sub.ci_low).clip(lower=0),
                                          (sub.ci_high - sub["mean"]).clip(lower=0)], fmt="none", color="k", lw=0.8)
        pts = per_seed_acc[(per_seed_acc.split == split) & (per_seed_acc.model == name)]
        for i, t in enumerate(task_names):
            v = pts[pts.task == t].accuracy
            ax.scatter(np.full(len(v), x[i]), v, s=6, color="k", zorder=3)
    ch = chance.set_index("task").reindex(task_names).chance
    ax.scatter(range(len(task_names)), ch, marker="_", s=600, color="0.3", zorder=4, label="chance")
    ax.set_xticks(range(len(task_names)), [t.replace("_", " ") for t in task_names], fontsize=8)
    ax.set(ylabel="accuracy", ylim=(0, 1.05), title=f"{split} examples ({len(exp.seeds)} seeds; points: seeds)")
plotting.legend_below(fig, axes[0, 0], height=0.05)
plotting.save_figure(fig, accuracy, "01_accuracy", figures_dir)
plt.show()

# %% [markdown]
# ## The information-flow checks
#
# **Countdown, three corruptions.** The other target written in the input only (*early*),
# in the copy after the solution only (*late*), or in both (the task's corruption). The ARM
# cannot read the late copy, so its logit difference must not move there; how far the MDM's
# moves is how much it uses the later copy. **Infilling, two formats** of the same content:
# restated (the ARM can answer) and in place (the decisive sound after the slot).

# %%
flow_rows = []
if exp.embedded:
    for s in exp.seeds:
        models = exp.models(s, ["arm", "mdm", "step0"])
        data = eval_data[s]["countdown"]
        variants = {k: [target_variants(e)[k] for e in data.examples] for k in ("early", "late", "both")}
        flow_rows.append(variant_logit_diffs(models, data, variants, exp.tokenizer, exp.pair.shift).assign(seed=s))
    flow = pd.concat(flow_rows, ignore_index=True)
    flow_summary = flow.groupby(["model", "variant"], sort=False).mean_logit_diff.agg(["mean", "min", "max"]).reset_index()
    display(flow_summary.pivot_table(index="model", columns="variant", values="mean").round(2))
    infill = per_seed_acc[(per_seed_acc.split == "heldout") & per_seed_acc.task.isin(["infilling", "infilling_in_place"])
                          & per_seed_acc.model.isin(["arm", "step0", "mdm"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    variants = ["clean", "early", "late", "both"]
    for k, name in enumerate(["arm", "step0", "mdm"]):
        sub = flow[flow.model == name]
        means = sub.groupby("variant").mean_logit_diff.mean().reindex(variants)
        x = np.arange(len(variants)) + (k - 1) * 0.27
        axes[0].bar(x, means, 0.27, color=plotting.RUN_COLORS[name], label=plotting.RUN_LABELS[name])
        for i, v in enumerate(variants):
            axes[0].scatter(np.full((sub.variant == v).sum(), x[i]), sub[sub.variant == v].mean_logit_diff,
                            s=6, color="k", zorder=3)
    axes[0].set_xticks(range(len(variants)), ["clean", "target changed\nin the input", "target changed\nafter the slot",
                                              "both\n(the corruption)"], fontsize=8)
    axes[0].axhline(0, color="k", lw=0.6)
    axes[0].set(ylabel="mean logit difference", title="Countdown: which copy of the target is read")
    axes[0].legend(fontsize=7)
    for k, name in enumerate(["arm", "step0", "mdm"]):
        sub = infill[infill.model == name]
        means = sub.groupby("task").accuracy.mean().reindex(["infilling", "infilling_in_place"])
        x = np.arange(2) + (k - 1) * 0.27
        axes[1].bar(x, means, 0.27, color=plotting.RUN_COLORS[name], label=plotting.RUN_LABELS[name])
        for i, t in enumerate(["infilling", "infilling_in_place"]):
            v = sub[sub.task == t].accuracy
            axes[1].scatter(np.full(len(v), x[i]), v, s=6, color="k", zorder=3)
    axes[1].axhline(1 / 16, color="0.3", ls=":", lw=0.8, label="chance (1 of 16)")
    axes[1].axhline(1 / 4, color="0.3", ls="--", lw=0.8, label="best guess from the place (1 of 4)")
    axes[1].set_xticks(range(2), ["restated\n(sound before the slot)", "in place\n(sound after the slot)"], fontsize=8)
    axes[1].set(ylabel="held-out accuracy", ylim=(0, 1.05), title="Infilling: the same content, two formats")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    plotting.save_figure(fig, flow.merge(infill.pivot_table(index=["seed", "model"], columns="task",
                                                             values="accuracy").reset_index(), on=["seed", "model"],
                                         how="left"), "01_information_flow", figures_dir)
    plt.show()

# %% [markdown]
# ## Along post-training
#
# Every saved checkpoint of the MDM and of the two controls saved as densely, on held-out
# examples (`n_eval_curve` per task). Step 0 is the ARM's weights (read with full attention
# for the MDM, causally for the controls); the dashed line marks the end of the attention
# annealing. Lines: mean over seeds; bands: the range over seeds.

# %%
if exp.embedded:
    curve_rows = []
    for r in exp.runs:
        data = {t: d.subset(range(min(n_eval_curve, len(d)))) for t, d in eval_data[r.seed].items()}
        for name in DENSE:
            curve = accuracy_along_post_training(r.checkpoints[name], data, exp.decoding(name), exp.pair.device,
                                                 exp.pair.shift, progress=False, cache_dir=r.run_dir / "curves")
            curve_rows.append(curve.assign(seed=r.seed, model=name))
    curves = pd.concat(curve_rows, ignore_index=True)
    fig, axes = plt.subplots(1, len(task_names), figsize=(3.0 * len(task_names), 3.2), sharey=True)
    for ax, t in zip(axes, task_names):
        for name in DENSE:
            sub = curves[(curves.task == t) & (curves.model == name)].groupby("step").accuracy.agg(["mean", "min", "max"])
            ax.plot(sub.index, sub["mean"], color=plotting.RUN_COLORS[name], label=plotting.RUN_LABELS[name])
            ax.fill_between(sub.index, sub["min"], sub["max"], color=plotting.RUN_COLORS[name], alpha=0.15, lw=0)
        ax.axvline(post_cfg.anneal_steps, color="k", ls="--", lw=0.7)
        ax.set(title=t.replace("_", " "), xlabel="post-training step", ylim=(-0.02, 1.02))
    axes[0].set_ylabel("held-out accuracy")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    plotting.save_figure(fig, curves, "01_accuracy_along_post_training", figures_dir)
    plt.show()

# %% [markdown]
# ## The pools
#
# As in the paper (v5), circuits are traced only on examples that *both* models answer
# correctly, so that a difference in circuits is not a difference in competence; here on
# held-out examples only, for every seed. In-place infilling, which the ARM cannot solve,
# keeps the examples the MDM solves. Each pool is saved as JSON lines (words, token ids,
# answer slots, correct and counterfactual ids) in the seed's run folder.

# %%
display(pools.pivot_table(index="task", columns="seed", values="pool_size").reindex(task_names))
fig, ax = plt.subplots(figsize=(7, 3.2))
pivot = pools.pivot_table(index="task", columns="seed", values="pool_size").reindex(pools.task.unique())
for k, s in enumerate(pivot.columns):
    ax.bar(np.arange(len(pivot)) + (k - (len(pivot.columns) - 1) / 2) * 0.8 / len(pivot.columns), pivot[s],
           0.8 / len(pivot.columns), label=f"seed {s}")
ax.axhline(n_eval, color="k", lw=0.8, ls=":")
ax.set_xticks(range(len(pivot)), [t.replace("_", "\n") for t in pivot.index], fontsize=8)
ax.set(ylabel="examples in the pool", title=f"Pools (of {n_eval} held-out examples per task and seed)")
ax.legend(fontsize=7)
fig.tight_layout()
plotting.save_figure(fig, pools.drop(columns=["path"]), "01_pools", figures_dir)
plt.show()

# %% [markdown]
# ## Reading the numbers
#
# Computed from the tables above.

# %%
for t in task_names:
    sub = accuracy[(accuracy.task == t)].set_index(["split", "model"])
    line = "  ".join(f"{m} {sub.loc[('heldout', m), 'mean']:.1%}" for m in ("arm", "mdm") if ("heldout", m) in sub.index)
    if ("train", "arm") in sub.index:
        line += f"  (train: ARM {sub.loc[('train', 'arm'), 'mean']:.1%}, MDM {sub.loc[('train', 'mdm'), 'mean']:.1%})"
    print(f"{t:19s} held-out {line}")
