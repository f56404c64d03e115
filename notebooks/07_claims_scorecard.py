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
# # 07 · The claims scorecard
#
# One row per claim, task and statistic, from notebooks 03 (claims 1 and 2, and their
# robustness: claim 4), 04 (the ablation evidence for claim 2) and 05 (claim 3). Every row
# reads the MDM's change from its ARM (`mdm_minus_arm`) against the change that continued
# training with the ARM's own objective makes (`null_minus_arm`, the model `arm_continued`);
# the interval (`ci_low`, `ci_high`) is the hierarchical bootstrap interval (seeds, then
# examples) of the difference of the two, the *excess*; `seeds_holding` counts the seeds
# whose own excess agrees with the claim.
#
# The rule, as stated in notebook 03: a claim that the MDM *changes* something holds when the
# excess points the claimed way with its interval excluding 0 and at least two thirds of the
# seeds agreeing (reversed: the same the other way; otherwise not distinguishable from the
# null); a claim that the MDM *keeps* something holds when the excess change stays below the
# equivalence margin. Claim 4 (robustness) holds for a task when every verdict of claims 1-2
# keeps its direction at other circuit sizes, on a second pool of fresh prompts, with the MDM
# decoding in fewer steps where a task has several answer slots (notebook 03) and when computed
# from exact edge patching.

# %% tags=["parameters"]
# mechshift: after 03 04 05  (the notebooks this one needs; run_all.sh --jobs runs others beside it)
model_pair = "embedded"
seed = 0
seeds = 0
device = "auto"
dtype = "auto"
device_map = ""
workers = 0
smoke = False
artifacts_dir = "../artifacts"
figures_dir = "../figures"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from mechshift_utils.analysis.scorecard import COLUMNS, NO_NULL
from mechshift_utils.core.validation import ParameterError
from mechshift_utils.notebook import plotting
from mechshift_utils.notebook.params import NotebookParams, figures_dir_for

params = NotebookParams(model_pair, seed, device, smoke, dtype, device_map, seeds, workers).validated()
figures_dir = figures_dir_for(figures_dir, smoke)
plotting.use_style()
pd.set_option("display.width", 220, "display.max_colwidth", 60)


def read(name):
    path = Path(figures_dir) / name
    if not path.is_file():
        raise ParameterError(f"figures_dir: {path} is missing; run notebooks 03-05 first (./run_all.sh)")
    return pd.read_csv(path)


rows_03, rows_04, rows_05 = read("03_scorecard_rows.csv"), read("04_scorecard_rows.csv"), read("05_scorecard_rows.csv")
robust = read("03_robustness.csv")
if "scores" in rows_03:  # notebook 03 adds its verdicts recomputed from exact patching, marked in "scores"
    main, exact = rows_03[rows_03.scores.isna()], rows_03[rows_03.scores == "exact patching"]
else:
    main, exact = rows_03, pd.DataFrame()

# %% [markdown]
# ## Claim 4: do the verdicts of claims 1-2 keep their direction?

# %%
claim4 = []
for t, sub in main.groupby("task", sort=False):
    settings = robust[robust.task == t]
    changed = []
    for r in sub.itertuples():
        others = settings[(settings.statistic == r.statistic)]
        for o in others.itertuples():
            if o.verdict != r.verdict:
                changed.append(f"{r.statistic} at {o.setting}: {o.verdict}")
        if len(exact):
            e = exact[(exact.task == t) & (exact.statistic == r.statistic)]
            if len(e) and e.verdict.iloc[0] != r.verdict:
                changed.append(f"{r.statistic} from exact patching: {e.verdict.iloc[0]}")
    checks = len(sub) * (len(settings.setting.unique()) + (1 if len(exact) else 0))
    claim4.append({"claim": "claim 4", "task": t, "regime": sub.regime.iloc[0],
                   "statistic": "claim 1-2 verdicts across K, pools, decoding budgets and exact patching", "mdm_minus_arm": np.nan,
                   "null_minus_arm": np.nan, "excess": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                   "n_seeds": int(sub.n_seeds.iloc[0]), "seeds_holding": np.nan,
                   "verdict": NO_NULL if (sub.verdict == NO_NULL).all() else "holds" if not changed
                   else "does not hold: " + "; ".join(changed),
                   "settings_checked": checks, "settings_changed": len(changed)})
claim4 = pd.DataFrame(claim4)

# %%
scorecard = pd.concat([main, rows_04, rows_05, claim4], ignore_index=True)
extra = [c for c in scorecard.columns if c not in COLUMNS]
scorecard = scorecard[COLUMNS + extra]
plotting.save_table(scorecard, "claims_scorecard", figures_dir)
display(scorecard[COLUMNS].round(3))

# %%
shown = scorecard[scorecard.claim != "claim 4"].reset_index(drop=True)
colors = {"holds": "#2ca02c", "reversed": "#d62728", "does not hold": "#d62728",
          "not distinguishable from the null": "0.5", "inconclusive": "0.5"}


def count(value):
    """A seed count as an integer; '-' where a row has none (a real pair: no null, no seeds to count)."""
    return "-" if pd.isna(value) else int(value)


fig, ax = plt.subplots(figsize=(9, 0.32 * len(shown) + 1.5))
y = np.arange(len(shown))[::-1]
for yy, r in zip(y, shown.itertuples()):
    color = colors.get(r.verdict, "0.5")
    ax.hlines(yy, r.ci_low, r.ci_high, color=color, lw=1.2)  # the interval (a percentile bootstrap: it
    ax.plot(r.excess, yy, "o", color=color, ms=4)           # need not be centred on the point estimate)
    ax.annotate(f"{r.verdict} ({count(r.seeds_holding)}/{count(r.n_seeds)})", (max(r.ci_high, r.excess), yy), xytext=(4, 0),
                textcoords="offset points", va="center", fontsize=6, color=color)
ax.axvline(0, color="k", lw=0.8)
ax.set_yticks(y, [f"{r.claim} · {r.task} · {r.statistic}" for r in shown.itertuples()], fontsize=6)
ax.set_xlabel("excess over the null: (MDM − ARM) − (arm_continued − ARM), 95% interval over seeds and examples")
ax.set_title("Claims scorecard", fontsize=10)
fig.tight_layout()
plotting.save_figure(fig, scorecard, "claims_scorecard", figures_dir)
plt.show()

# %%
for r in scorecard.itertuples():
    if r.claim == "claim 4":
        print(f"{r.claim} · {r.task}: {r.verdict}")
    else:
        print(f"{r.claim} · {r.task} · {r.statistic}: excess {r.excess:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}], "
              f"{r.seeds_holding}/{r.n_seeds} seeds -> {r.verdict}")
