"""The claims scorecard: each claim of the paper read against a null, with seeds as the unit.

Every row compares a statistic of the MDM with the same statistic of the ARM it came from
(``mdm_minus_arm``), and reads it against the null that no mechanism shift predicts: the ARM
trained further with its own objective, ``arm_continued`` (``null_minus_arm``). The difference of
the two, the *excess* over the null, is what a claim is about. Its interval is a hierarchical
bootstrap over seeds, then examples (:mod:`.seeds`).

The rule, stated before any number (the thresholds are notebook parameters, :class:`VerdictRule`):

* A claim that the MDM *changes* something (claim 2: lower overlap, earlier layers; claim 3: work
  spread over more components) **holds** when the excess points the claimed way with its interval
  excluding 0 and at least ``min_seed_fraction`` of the seeds agreeing; **reversed** when the same
  is true the other way; otherwise **not distinguishable from the null**.
* A claim that the MDM *keeps* something (claim 1: the circuit and its depth profile on
  prefix-dominant tasks) **holds** when the excess change stays below ``equivalence_margin`` (the
  interval's upper end, and that share of the seeds); **does not hold** when the interval lies
  above the margin, or above 0 while reaching past it (the MDM changed more than continued training
  does, by more than the margin allows); otherwise **inconclusive**.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core.validation import ParameterError
from .seeds import interval

HOLDS, REVERSED, NULL, FAILS, INCONCLUSIVE = ("holds", "reversed", "not distinguishable from the null",
                                              "does not hold", "inconclusive")
COLUMNS = ["claim", "task", "regime", "statistic", "mdm_minus_arm", "null_minus_arm", "excess", "ci_low", "ci_high",
           "n_seeds", "seeds_holding", "verdict"]


@dataclass(frozen=True)
class VerdictRule:
    level: float = 0.95  # of the interval of the excess
    min_seed_fraction: float = 2 / 3  # of seeds whose own excess agrees with the verdict
    equivalence_margin: float = 0.1  # claim 1: how much more than the null the MDM may change

    def validate(self) -> "VerdictRule":
        if not 0 < self.level < 1:
            raise ParameterError(f"level: expected a number in (0, 1), got {self.level!r}")
        if not 0 < self.min_seed_fraction <= 1:
            raise ParameterError(f"min_seed_fraction: expected a number in (0, 1], got {self.min_seed_fraction!r}")
        if not self.equivalence_margin >= 0:
            raise ParameterError(f"equivalence_margin: expected a number >= 0, got {self.equivalence_margin!r}")
        return self


def effect_verdict(ci: tuple[float, float], per_seed_excess, direction: int, rule: VerdictRule) -> tuple[str, int]:
    """(verdict, seeds agreeing with the claimed direction) for a claim that the MDM changes a statistic
    in ``direction`` (+1 up, -1 down) beyond the null."""
    x = np.asarray(per_seed_excess, dtype=float) * direction
    agree, disagree = int((x > 0).sum()), int((x < 0).sum())
    low, high = (ci[0] * direction, ci[1] * direction) if direction > 0 else (ci[1] * direction, ci[0] * direction)
    need = rule.min_seed_fraction * len(x)
    if low > 0 and agree >= need:
        return HOLDS, agree
    if high < 0 and disagree >= need:
        return REVERSED, agree
    return NULL, agree


def equivalence_verdict(ci: tuple[float, float], per_seed_excess, rule: VerdictRule) -> tuple[str, int]:
    """(verdict, seeds within the margin) for a claim that the MDM changes a statistic no more than the
    null does (up to ``rule.equivalence_margin``)."""
    x = np.asarray(per_seed_excess, dtype=float)
    within = int((x < rule.equivalence_margin).sum())
    if ci[1] < rule.equivalence_margin and within >= rule.min_seed_fraction * len(x):
        return HOLDS, within
    if ci[0] > rule.equivalence_margin or (ci[0] > 0 and ci[1] >= rule.equivalence_margin):
        return FAILS, within
    return INCONCLUSIVE, within


def scorecard_row(claim: str, task: str, regime: str, statistic: str, per_seed: pd.DataFrame, draws: pd.DataFrame,
                  kind: str, rule: VerdictRule, direction: int = 1, extra: dict | None = None) -> dict:
    """One row: ``per_seed`` and ``draws`` hold the columns ``mdm`` and ``null`` (the statistic of the MDM
    and of arm_continued, each minus the ARM's), per seed and per bootstrap draw. ``kind``: "effect"
    (with ``direction``) or "equivalence"."""
    for frame in (per_seed, draws):
        missing = {"mdm", "null"} - set(frame.columns)
        if missing:
            raise ParameterError(f"per_seed/draws: expected columns 'mdm' and 'null', missing {sorted(missing)}")
    excess_seed = per_seed["mdm"] - per_seed["null"]
    ci = interval(draws["mdm"] - draws["null"], rule.level)
    if kind == "effect":
        verdict, holding = effect_verdict(ci, excess_seed, direction, rule)
    elif kind == "equivalence":
        verdict, holding = equivalence_verdict(ci, excess_seed, rule)
    else:
        raise ParameterError(f"kind: expected 'effect' or 'equivalence', got {kind!r}")
    mdm_ci = interval(draws["mdm"], rule.level)
    return {"claim": claim, "task": task, "regime": regime, "statistic": statistic,
            "mdm_minus_arm": float(per_seed["mdm"].mean()), "null_minus_arm": float(per_seed["null"].mean()),
            "excess": float(excess_seed.mean()), "ci_low": ci[0], "ci_high": ci[1], "n_seeds": len(per_seed),
            "seeds_holding": holding, "verdict": verdict, "mdm_ci_low": mdm_ci[0], "mdm_ci_high": mdm_ci[1],
            "kind": kind, "direction": direction, **(extra or {})}

NO_NULL = "not read: no null model (a real pair has no controls)"


def unreferenced_row(claim: str, task: str, regime: str, statistic: str, per_seed: pd.DataFrame, draws: pd.DataFrame,
                     rule: VerdictRule, extra: dict | None = None) -> dict:
    """A row for a pair without controls (a real pair): the MDM's change and its interval, no null and
    no verdict (a change alone, without the change continued training makes, does not test a claim)."""
    ci = interval(draws["mdm"], rule.level)
    return {"claim": claim, "task": task, "regime": regime, "statistic": statistic,
            "mdm_minus_arm": float(per_seed["mdm"].mean()), "null_minus_arm": float("nan"), "excess": float("nan"),
            "ci_low": float("nan"), "ci_high": float("nan"), "n_seeds": len(per_seed), "seeds_holding": float("nan"),
            "verdict": NO_NULL, "mdm_ci_low": ci[0], "mdm_ci_high": ci[1], **(extra or {})}
