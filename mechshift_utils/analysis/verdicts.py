"""The operational form of the paper's structural claims (1 and 2), as rules over measured numbers.

Claim 1 (prefix-dominant tasks): the MDM keeps the ARM's circuit. It holds for a task when the
Jaccard overlap of the two top-K edge sets is at least ``overlap_threshold`` and the depth profiles
differ by at most ``profile_threshold`` (total variation).

Claim 2 (globally constrained tasks): the MDM leaves the inherited pathways and moves computation
earlier. It holds for a task when its Jaccard is below the mean Jaccard of the prefix-dominant
tasks and the MDM's early-layer share exceeds the ARM's with a bootstrap interval of the difference
above zero.

The thresholds are parameters (notebook 03 states them before the numbers).
"""
from __future__ import annotations

import pandas as pd

from ..tasks import GLOBALLY_CONSTRAINED, PREFIX_DOMINANT

CLAIMS = {PREFIX_DOMINANT: "claim 1 (kept circuit)", GLOBALLY_CONSTRAINED: "claim 2 (new, earlier pathways)"}


def structural_verdicts(at_k: pd.DataFrame, overlap_threshold: float = 0.5,
                        profile_threshold: float = 0.2) -> pd.DataFrame:
    """One verdict row per task from ``at_k`` (columns task, regime, jaccard, profile_distance, and the
    early-share difference MDM - ARM with its interval: difference, ci_low, ci_high)."""
    prefix_mean = at_k[at_k.regime == PREFIX_DOMINANT].jaccard.mean()
    rows = []
    for row in at_k.itertuples():
        if row.regime == PREFIX_DOMINANT:
            holds = row.jaccard >= overlap_threshold and row.profile_distance <= profile_threshold
        else:
            holds = row.jaccard < prefix_mean and row.ci_low > 0
        rows.append({"task": row.task, "regime": row.regime, "claim": CLAIMS[row.regime], "holds": bool(holds),
                     "jaccard": row.jaccard, "profile_distance": row.profile_distance,
                     "early_share_mdm_minus_arm": row.difference,
                     "diff_ci": f"[{row.ci_low:.3f}, {row.ci_high:.3f}]"})
    return pd.DataFrame(rows)


def regime_word(holds) -> str:
    """A regime's verdict from its tasks': "holds" (all), "holds partly" (some), "does not hold"."""
    holds = list(holds)
    return "holds" if all(holds) else ("holds partly" if any(holds) else "does not hold")
