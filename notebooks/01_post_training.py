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
# Before any circuit can be compared, we need the pair and the examples both
# models solve. This notebook
#
# 1. shows the four tasks in the exact token format both models read,
# 2. trains the embedded ARM (a 4-layer GPT-2) from scratch on the task mixture,
# 3. post-trains it into an MDM with the DiffuGPT recipe (1/t-weighted masked
#    loss, shift kept, attention annealed from causal to full),
# 4. scores both models on the same sequences, along post-training too, and
# 5. saves the common-correct pool that notebooks 02-05 trace.
#
# Everything it computes lives in `mechshift_utils`; this notebook is the narrative.

# %% tags=["parameters"]
model_pair = "embedded"  # a real pair (README), or the path of a pair .json file
seed = 0
device = "auto"  # "auto": the GPU when present
dtype = "auto"  # real pairs: "auto" (bfloat16 on a GPU, float32 on the CPU), "float32", "bfloat16"
device_map = ""  # real pairs: "pair" puts the ARM and the MDM on two GPUs
smoke = False  # tiny sizes (tests); the numbers then mean nothing
artifacts_dir = "../artifacts"
figures_dir = "../figures"
n_eval = 0  # evaluation examples per task; 0: 400 for the embedded pair, 1000 for a real pair
n_eval_curve = 200  # examples per task for accuracy along post-training (embedded pair)
pool_size = 500  # at most this many common-correct examples per task are kept (the paper's 500)

# %%
import pandas as pd
from IPython.display import display

from mechshift_utils import tasks
from mechshift_utils.core.validation import check_positive_int
from mechshift_utils.evaluation.accuracy import (accuracy_along_post_training, build_pools, dropped_table, eval_sets,
                                                 evaluate_pair)
from mechshift_utils.models import load_pair_tokenizer
from mechshift_utils.notebook import plotting
from mechshift_utils.notebook.params import NotebookParams, figures_dir_for
from mechshift_utils.notebook.pipeline import prepare_pair

params = NotebookParams(model_pair, seed, device, smoke, dtype, device_map).validated()
figures_dir = figures_dir_for(figures_dir, smoke)  # smoke runs leave the committed figures alone
real_pair = params.model_pair != "embedded"
n_eval = n_eval or (1000 if real_pair else 400)
if smoke:
    n_eval, n_eval_curve = min(n_eval, 24), min(n_eval_curve, 12)
check_positive_int("n_eval", n_eval)
check_positive_int("pool_size", pool_size)
check_positive_int("n_eval_curve", n_eval_curve)
plotting.use_style()
pd.set_option("display.width", 200, "display.max_colwidth", 120)

# %% [markdown]
# ## The four tasks
#
# Two regimes, as in the paper. **Prefix-dominant**: everything needed precedes the
# answer slot (IOI, Greater-Than). **Globally constrained**: the answer needs a plan
# toward a later constraint (Countdown: the first step must leave numbers that still
# reach the target) or information from both sides of a blank (Semantic Infilling:
# the place before the blank narrows the animal to four, the sound after it picks one).
#
# Both models read the *same* token sequence. Answer slots hold `[MASK]`; the logits
# for slot *i* are read at position *i − 1* (the shift DiffuGPT, DiffuLLaMA and Dream
# keep). So that the ARM can solve every task left to right, the decisive later
# information sits before the answer slot: Countdown's target is in the input (the MDM
# also sees it again at the end of the masked solution), and Infilling restates the
# blank at the end (`it was a [MASK]`). The corrupted sequence has the same length and
# mask layout and changes only what the paper changes: IOI's repeated subject (ABC),
# Greater-Than's start year (to 01), Countdown's target (so another first step is
# right), Infilling's later word (the sound).
#
# A real pair reads the same four tasks as natural text (`mechshift_utils.tasks.real`:
# capitalised names as the EAP-IG IOI set, "...from the year 1352 to the year 13" as
# its Greater-Than set, Dream's Countdown lines, infilling sentences), through its own
# subword tokenizer: every answer piece becomes as many masked tokens as the tokenizer
# gives it, and examples whose clean and corrupted token lengths or layouts differ are
# dropped and counted (table below).

# %%
tokenizer = load_pair_tokenizer(params.model_pair)  # the pair's own tokenizer decides the form it scores
rows = []
for name in tasks.TASK_NAMES:
    ex = tasks.task_examples(name, 1, seed, tokenizer)[0]
    join = " ".join if tasks.is_word_level(tokenizer) else "".join
    rows.append({"task": name, "regime": ex.regime, "clean": join(ex.clean[1:]),
                 "corrupted": join(ex.corrupted[1:]), "answer slots": ex.answer_positions,
                 "correct": join(ex.correct), "counterfactual": join(ex.counterfactual)})
display(pd.DataFrame(rows).set_index("task"))

# %% [markdown]
# ## Train the ARM, post-train the MDM
#
# The embedded ARM is a GPT-2 (transformers' `GPT2LMHeadModel`) trained from scratch
# with next-token loss on freshly sampled task sequences (answers written in). The
# MDM starts from the ARM's weights: each step samples t ~ U(10⁻³, 1), masks each token
# with probability t, and scores the masked tokens with cross-entropy weighted 1/t
# (normalised by the masked count), logits at *j − 1* predicting token *j*. The attention
# mask is causal OR Bernoulli(step / anneal_steps), so it opens from causal to full.
# Runs are cached under `artifacts/` by a hash of their configuration and resume after
# an interruption; a second run of this notebook reuses them. A real pair was
# post-trained by its authors: there is nothing to train here, and the training and
# checkpoint figures are skipped.

# %%
import matplotlib.pyplot as plt

pair, run = prepare_pair(params, artifacts_dir)
print(f"pair: {pair.name} on {pair.device}; mask token id {pair.mask_token_id}\n"
      f"ARM {pair.source['arm']}\nMDM {pair.source['mdm']}")
if run.trained:
    print(f"ARM training {run.arm_seconds:.0f} s, post-training {run.post_seconds:.0f} s "
          f"(0 s: reused from an earlier run); checkpoints at steps {sorted(run.checkpoints)}")
else:
    print(f"{pair.name}: loaded, not trained here; pools and attributions go to {run.run_dir}")

# %%
if run.trained:
    window = max(1, len(run.arm_log) // 40)
    arm_curve = run.arm_log.assign(loss_smoothed=run.arm_log.loss.rolling(window, min_periods=1).mean())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(arm_curve.step, arm_curve.loss, color="0.8", lw=0.8, label="per step")
    ax.plot(arm_curve.step, arm_curve.loss_smoothed, color=plotting.MODEL_COLORS["arm"], label=f"mean of {window}")
    ax.set(xlabel="training step", ylabel="next-token loss", title="ARM training (from scratch)", yscale="log")
    ax.legend()
    plotting.save_figure(fig, arm_curve[["step", "loss", "loss_smoothed", "lr"]], "01_arm_training_curve",
                         figures_dir)
    plt.show()

# %%
if run.trained:
    window = max(1, len(run.post_log) // 40)
    post_curve = run.post_log.assign(loss_smoothed=run.post_log.loss.rolling(window, min_periods=1).mean())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(post_curve.step, post_curve.loss, color="0.8", lw=0.8, label="per step")
    ax.plot(post_curve.step, post_curve.loss_smoothed, color=plotting.MODEL_COLORS["mdm"], label=f"mean of {window}")
    ax.set(xlabel="post-training step", ylabel="1/t-weighted masked loss", title="Post-training ARM → MDM",
           yscale="log")
    twin = ax.twinx()
    twin.plot(post_curve.step, post_curve.anneal_ratio, color="k", ls="--", label="attention opened")
    twin.set(ylabel="P(non-causal pair attended)", ylim=(-0.02, 1.02))
    twin.grid(False)
    for step in sorted(run.checkpoints):
        ax.axvline(step, color="0.6", lw=0.6, ls=":")
    lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(lines, [h.get_label() for h in lines], loc="upper right")
    plotting.save_figure(fig, post_curve[["step", "loss", "loss_smoothed", "anneal_ratio", "mask_rate", "lr"]],
                         "01_post_training_loss", figures_dir)
    plt.show()

# %% [markdown]
# ## Accuracy, ARM vs MDM
#
# Single-token answers: the argmax at the slot. Countdown's three-token first step:
# the ARM writes left to right; the MDM unmasks the slot it is most confident of
# first, one per step (the number of steps is `pair.decoding["mdm"].steps`). An answer
# counts when it is *any* right answer (any year after the start year; any first
# step from which the target is reachable). The black ticks are chance: a uniform
# guess among the candidates the format allows (IOI: the two names; Greater-Than:
# any two-digit year; Countdown: any first step on two of the numbers; Infilling: any
# of the 16 animals).

# %%
eval_data = eval_sets(pair.tokenizer, n_eval, seed, mask_token_id=pair.mask_token_id)
if real_pair:
    display(dropped_table(eval_data))  # examples this tokenizer cannot score position by position
scores, accuracy = evaluate_pair(pair, eval_data)
display(accuracy)

fig, ax = plt.subplots(figsize=(7, 3.5))
order = list(tasks.TASK_NAMES)
width = 0.38
for k, role in enumerate(("arm", "mdm")):
    sub = accuracy[accuracy.model == role].set_index("task").loc[order]
    ax.bar([i + (k - 0.5) * width for i in range(len(order))], sub.accuracy, width,
           color=plotting.MODEL_COLORS[role], label=plotting.MODEL_LABELS[role])
chance = accuracy.drop_duplicates("task").set_index("task").loc[order, "chance"]
ax.scatter(range(len(order)), chance, marker="_", s=900, color="k", label="chance", zorder=3)
ax.set_xticks(range(len(order)), [f"{t}\n({tasks.get_task(t).regime})" for t in order], fontsize=8)
ax.set(ylabel="accuracy", ylim=(0, 1.05), title=f"{pair.name}: accuracy per task (n={n_eval} each)")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8, frameon=False)
plotting.save_figure(fig, accuracy, "01_accuracy_arm_vs_mdm", figures_dir)
plt.show()

# %% [markdown]
# ## Along post-training
#
# Every saved checkpoint, read as an MDM (bidirectional, answer slots masked), on a
# smaller evaluation set. Step 0 is the ARM's weights with full attention and mask
# tokens it never saw; the dashed lines are the ARM itself.

# %%
if run.trained:
    curve_data = {name: d.subset(range(min(n_eval_curve, len(d)))) for name, d in eval_data.items()}
    curve = accuracy_along_post_training(pair, run.checkpoints, curve_data)
    arm_reference = (scores[(scores.model == "arm") & scores.example.lt(n_eval_curve)]
                     .groupby("task").correct.mean())
    fig, ax = plt.subplots(figsize=(7, 3.5))
    palette = dict(zip(order, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for name in order:
        sub = curve[curve.task == name]
        ax.plot(sub.step, sub.accuracy, marker="o", color=palette[name], label=name)
        ax.axhline(arm_reference[name], color=palette[name], ls="--", lw=0.8)
    ax.set(xlabel="post-training step", ylabel="MDM accuracy", ylim=(-0.02, 1.02),
           title="MDM accuracy along post-training (dashed: ARM)")
    ax.legend(fontsize=8)
    plotting.save_figure(fig, curve.merge(arm_reference.rename("arm_accuracy").reset_index(), on="task"),
                         "01_accuracy_along_post_training", figures_dir)
    plt.show()

# %% [markdown]
# ## The common-correct pool
#
# As in the paper (v5), the circuits of notebooks 02-05 are traced only on examples
# that *both* models answer correctly, so that a difference in circuits is not a
# difference in competence. Each pool is saved as JSON lines (words, token ids, answer
# slots, correct and counterfactual ids) next to the post-training run.

# %%
pools = build_pools(scores, eval_data, run.run_dir / "pools", max_size=pool_size)
display(pools[["task", "regime", "pool_size", "evaluated", "path"]])
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.bar(pools.task, pools.pool_size, color=["#4c72b0" if r == tasks.PREFIX_DOMINANT else "#dd8452"
                                           for r in pools.regime])
ax.axhline(n_eval, color="k", lw=0.8, ls=":")
ax.set(ylabel="examples both models solve", title=f"Common-correct pool (of {n_eval} per task, at most {pool_size})")
plotting.save_figure(fig, pools[["task", "regime", "pool_size", "evaluated"]], "01_common_correct_pool",
                     figures_dir)
plt.show()

# %% [markdown]
# ## Reading the numbers
#
# The accuracy table above is the result; the summary below is computed from it, not
# written by hand. The pool sizes bound how many examples the circuit notebooks can
# average over per task.

# %%
wide = accuracy.pivot(index="task", columns="model", values="accuracy").loc[order]
for name in order:
    arm_acc, mdm_acc = wide.loc[name, "arm"], wide.loc[name, "mdm"]
    print(f"{name:13s} ARM {arm_acc:6.1%}  MDM {mdm_acc:6.1%}  chance {chance[name]:6.1%}  "
          f"pool {int(pools.set_index('task').loc[name, 'pool_size'])}")
