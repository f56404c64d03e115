"""Print the README's result tables (markdown) from the committed figures' CSVs.

    .venv/bin/python scripts/readme_tables.py [figures_dir]

The README's tables of the organism run are pasted from this output, so that they say what the
CSVs say; the prose around them is written by hand.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

CORE = ["ioi", "greater_than", "countdown", "infilling"]
ALL_TASKS = ["ioi", "greater_than", "countdown", "countdown_late", "infilling", "infilling_in_place"]
MODELS = ["arm", "mdm", "arm_continued", "mdm_causal", "step0", "mdm_scratch"]
SHORT = {"circuit change (1 - Jaccard@K)": "circuit change", "depth-profile distance (TV)": "depth-profile distance",
         "early-layer share without m0": "early share without m0"}


def signed(x: float, digits: int = 3) -> str:
    return f"{x:+.{digits}f}".replace("-", "−")


def plain(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}".replace("-", "−")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def accuracy(fig: Path) -> str:
    a = pd.read_csv(fig / "01_accuracy.csv")
    a = a[a.split == "heldout"]
    rows = []
    for t in ALL_TASKS:
        sub = a[a.task == t].set_index("model")
        if sub.empty:
            continue
        cells = [f"{100 * sub.loc[m, 'mean']:.1f}% [{100 * sub.loc[m, 'ci_low']:.0f}, {100 * sub.loc[m, 'ci_high']:.0f}]"
                 if m in sub.index else "" for m in MODELS]
        rows.append([f"`{t}`", *cells, f"{100 * sub['chance'].iloc[0]:.1f}%"])
    return table(["task", *MODELS, "chance"], rows)


def eapig_vs_exact(fig: Path) -> str:
    e = pd.read_csv(fig / "02_eapig_vs_exact_edges.csv")
    n = pd.read_csv(fig / "02_eapig_vs_exact_nodes.csv")
    c = pd.read_csv(fig / "02_completeness_vs_ig_steps.csv")
    f = pd.read_csv(fig / "02_faithfulness_curves.csv")
    rows = []
    for t in CORE:
        def pair(frame, col, fmt, agg="mean"):
            vals = [getattr(frame[(frame.task == t) & (frame.model == m)][col], agg)() for m in ("arm", "mdm")]
            return " / ".join(fmt(v) for v in vals)
        gap = e.assign(gap=(e.early_share_eapig - e.early_share_exact).abs())
        comp = c[c.ig_steps == 8]
        auc = f.drop_duplicates(["seed", "task", "model"])
        rows.append([f"`{t}`", pair(e, "spearman_edges", lambda v: f"{v:.2f}"),
                     pair(e, "jaccard_topk_eapig_vs_exact", lambda v: f"{v:.2f}"),
                     pair(gap, "gap", lambda v: f"{v:.2f}", "max"),
                     pair(n, "spearman_nodes_without_input", lambda v: f"{v:.3f}"),
                     pair(comp, "relative_error", lambda v: f"{100 * v:.2f}%"),
                     pair(auc, "area_under_curve", lambda v: f"{v:.3f}")])
    return table(["task", "edge Spearman, EAP-IG vs exact", "top-K Jaccard, EAP-IG vs exact",
                  "largest early-share gap (a seed)", "node Spearman without the input node (seed 0)",
                  "completeness error, ig_steps 8", "faithfulness AUC"], rows)


def jaccard_at_k(fig: Path, k: int) -> str:
    j = pd.read_csv(fig / "03_jaccard_vs_k.csv")
    j = j[j.k == k]
    models = ["mdm", "arm_continued", "mdm_causal", "step0", "arm_twin", "mdm_scratch", "split_half"]
    rows = []
    for t in CORE:
        cells = []
        for m in models:
            per_seed = j[(j.task == t) & (j.model == m)].groupby("seed").jaccard.mean()
            cells.append(f"{per_seed.mean():.2f} ({per_seed.min():.2f}-{per_seed.max():.2f})" if len(per_seed) else "")
        chance = j[(j.task == t) & (j.model == "chance")].jaccard
        cells.append(f"{chance.mean():.2f}" if len(chance) else "")
        rows.append([f"`{t}`", *cells])
    return table(["task", *models, "chance"], rows)


def minimal(fig: Path) -> str:
    mc = pd.read_csv(fig / "03_minimal_circuits.csv")
    rows = []
    for level in sorted(mc.level.unique()):
        for t in CORE:
            sub = mc[(mc.level == level) & (mc.task == t)]
            k = sub.groupby("model").k_minimal.mean()
            jac = sub.groupby("model").jaccard_with_arm.mean()
            rows.append([f"{level:.0%}", f"`{t}`", *[f"{k.get(m, float('nan')):.0f}" for m in ("arm", "mdm", "arm_continued")],
                         *[f"{jac.get(m, float('nan')):.2f}" for m in ("mdm", "arm_continued")]])
    return table(["faithfulness", "task", "K: ARM", "K: MDM", "K: null", "Jaccard with ARM: MDM", "Jaccard: null"], rows)


def depth(fig: Path) -> str:
    d = pd.read_csv(fig / "03_depth_summary.csv")
    d = d[d.task.isin(CORE)]
    rows = []
    for t in CORE:
        sub = d[d.task == t].groupby("model")[["layer0_share", "early_share", "center_of_mass"]].mean()
        rows.append([f"`{t}`", *[" / ".join(f"{sub.loc[m, c]:.2f}" for m in ("arm", "mdm", "arm_continued"))
                                 for c in ("layer0_share", "early_share", "center_of_mass")],
                     signed(sub.loc["mdm", "early_share"] - sub.loc["arm", "early_share"], 2),
                     signed(sub.loc["arm_continued", "early_share"] - sub.loc["arm", "early_share"], 2)])
    return table(["task", "layer-0 share (ARM / MDM / null)", "early share", "centre of mass (layers)",
                  "MDM − ARM early share", "null − ARM"], rows)


def positions(fig: Path) -> str:
    p = pd.read_csv(fig / "03_position_shares.csv")
    mean = p.groupby(["task", "model", "region"]).share.mean()
    rows = []
    for t in ALL_TASKS:
        if (t, "mdm", "prefix") not in mean.index:
            continue
        rows.append([f"`{t}`", *[f"{mean.get((t, 'mdm', r), 0.0):.3f}" for r in ("prefix", "read", "slot", "suffix")],
                     f"{mean.get((t, 'step0', 'suffix'), float('nan')):.3f}",
                     f"{mean.get((t, 'arm', 'slot'), 0.0) + mean.get((t, 'arm', 'suffix'), 0.0):.3f}"])
    return table(["task", "MDM: prefix", "read", "slot", "suffix", "step 0: suffix", "ARM: slot + suffix"], rows)


def scorecard_rows(frame: pd.DataFrame) -> list[list[str]]:
    rows = []
    for r in frame.itertuples():
        claim = r.claim.replace("claim ", "")
        if pd.isna(r.excess):
            rows.append([claim, f"`{r.task}`", r.statistic, "", "", "", "", r.verdict])
            continue
        seeds = f"{int(r.seeds_holding)}/{int(r.n_seeds)}" if not pd.isna(r.seeds_holding) else ""
        rows.append([claim, f"`{r.task}`", SHORT.get(r.statistic, r.statistic), signed(r.mdm_minus_arm),
                     signed(r.null_minus_arm), f"{signed(r.excess)} [{signed(r.ci_low)}, {signed(r.ci_high)}]", seeds,
                     r.verdict.replace(" from the null", "")])
    return rows


HEADER = ["claim", "task", "statistic", "MDM − ARM", "null − ARM", "excess [95% CI]", "seeds", "verdict"]


def claims_03(fig: Path) -> str:
    s = pd.read_csv(fig / "03_scorecard_rows.csv")
    if "scores" in s.columns:
        s = s[s.scores.isna() | (s.scores == "EAP-IG")]
    return table(HEADER, scorecard_rows(s))


def exact_03(fig: Path) -> str:
    s = pd.read_csv(fig / "03_scorecard_rows.csv")
    if "scores" not in s.columns:
        return "(no exact rows)"
    piv = s.pivot_table(index=["task", "statistic"], columns="scores", values="verdict", aggfunc="first")
    ex = s[s.scores.notna() & s.scores.str.startswith("exact")]
    lines = [piv.to_string()]
    for r in ex.itertuples():
        lines.append(f"exact: {r.task} {r.statistic}: {signed(r.excess)} [{signed(r.ci_low)}, {signed(r.ci_high)}] "
                     f"{r.verdict}")
    return "\n".join(lines)


def robustness(fig: Path) -> str:
    r = pd.read_csv(fig / "03_robustness.csv")
    piv = r.pivot_table(index=["task", "statistic"], columns="setting", values="verdict", aggfunc="first")
    return piv.to_string()


def ablations(fig: Path) -> str:
    a = pd.read_csv(fig / "04_ablation_metric_drop.csv")
    a = a[a.ablation == "mean"]
    groups = [g for g in ("early", "mid/late", "m0", "random") if g in set(a.group)]
    rows = []
    for t in CORE:
        cells = []
        for g in groups:
            sub = a[(a.task == t) & (a.group == g)].set_index("model")
            cells.append(" / ".join(plain(sub.loc[m, "mean"], 2) if m in sub.index else "" for m in
                                    ("arm", "mdm", "arm_continued")))
        rows.append([f"`{t}`", *cells])
    return table(["task", *groups], rows)


def specialization(fig: Path) -> str:
    sp = pd.read_csv(fig / "05_specialization.csv")
    sc = pd.read_csv(fig / "05_scorecard_rows.csv")
    sp = sp[sp.measure == "entropy_norm"]
    rows = []
    for t in CORE:
        cells = []
        for w in ("importance", "alignment"):
            m = sp[(sp.task == t) & (sp.weight == w)].groupby("model").value.mean()
            r = sc[(sc.task == t) & (sc.statistic == f"normalised entropy of {w}")].iloc[0]
            cells += [" / ".join(f"{m[x]:.3f}" for x in ("arm", "mdm", "arm_continued")),
                      f"{signed(r.excess)} [{signed(r.ci_low)}, {signed(r.ci_high)}]",
                      f"{r.verdict.replace(' from the null', '')} ({int(r.seeds_holding)}/{int(r.n_seeds)})"]
        rows.append([f"`{t}`", *cells])
    return table(["task", "importance: ARM / MDM / null", "excess [95% CI]", "verdict",
                  "alignment: ARM / MDM / null", "excess [95% CI]", "verdict"], rows)


def scorecard(fig: Path) -> str:
    s = pd.read_csv(fig / "claims_scorecard.csv")
    keep = s[(s.scores.isna() | (s.scores == "EAP-IG")) & (s.ablation.isna() | (s.ablation == "mean"))]
    keep = keep[~keep.statistic.str.contains("alignment") | (keep.claim != "claim 3") | keep.verdict.str.startswith("holds")]
    return table(HEADER, scorecard_rows(keep))


def training_time(fig: Path) -> str:
    t = pd.read_csv(fig / "01_training_time.csv")
    t["kind"] = t.run.where(t.run == "arm", "post-training")
    g = t.groupby("kind").agg(n=("seconds", "size"), s_min=("seconds", "min"), s_max=("seconds", "max"),
                              ms_min=("ms_per_step", "min"), ms_max=("ms_per_step", "max"), total=("seconds", "sum"))
    return g.round(1).to_string() + f"\nsum of run timers: {t.seconds.sum():.0f} s"


SECTIONS = {"accuracy (01)": accuracy, "EAP-IG vs exact (02)": eapig_vs_exact, "depth (03)": depth,
            "positions (03)": positions, "minimal circuits (03)": minimal, "claims 1-2 (03)": claims_03,
            "exact (03)": exact_03, "robustness (03)": robustness, "ablations, mean (04)": ablations,
            "specialization (05)": specialization, "scorecard (07)": scorecard, "training time (01)": training_time}


def main(argv: list[str]) -> None:
    fig = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "figures"
    k = int(pd.read_csv(fig / "03_scorecard_rows.csv").k.dropna().iloc[0])
    print(f"## Jaccard at K = {k} (03)\n\n{jaccard_at_k(fig, k)}\n")
    for name, fn in SECTIONS.items():
        try:
            print(f"## {name}\n\n{fn(fig)}\n")
        except (FileNotFoundError, KeyError, IndexError) as err:
            print(f"## {name}\n\n(not available: {type(err).__name__}: {err})\n")


if __name__ == "__main__":
    main(sys.argv[1:])
