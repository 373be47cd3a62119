"""Evaluation: accuracy on the test split per model, PGR, the weak blind-spot share, the report.

Scoring a model on the test split is a naive annotation of the test rows (the same Ray Data stage
and actors as weak labelling); the weak ensemble is scored once, as an ensemble, which also gives
each weak model's accuracy.

Metrics:
  accuracy       seed 000 Eq. 3: the fraction of test rows whose prediction equals the truth
  PGR            seed 000 Eq. 4: (Acc(w2s) - Acc(weak)) / |Acc(ceiling) - Acc(weak)|, weak = the
                 supervisor that labelled the data (the ensemble, or the single weak model);
                 None when ceiling == weak
  gain           Acc(w2s) - Acc(strong zero-shot): what training on the weak labels bought over not
                 training at all (the strongest simple baseline); negative = the method made the
                 strong model worse
  intervals      95% percentile bootstrap over the test rows (B = 2000, rows resampled with
                 replacement, the same resample for every model, so differences are paired):
                 each accuracy, each PGR (resamples with a zero weak-ceiling gap dropped), each
                 gain, and each difference between two W2S methods; a difference is significant
                 when its interval excludes 0
  blind spot     among test rows the strong ceiling gets right and the W2S model gets wrong, the
                 fraction in the weak supervisor's unknown area (rows it gets wrong):
                 |{ceil right, w2s wrong, weak wrong}| / |{ceil right, w2s wrong}|; None when the
                 denominator is empty. A proxy shaped like seed 002's Deception Score, not that
                 score: the ceiling stands in for the no-conflict model and no conflicting
                 objective is trained (the score itself: pipelines/deception.py)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.formatting import fmt


def pgr(w2s: float, weak: float, ceiling: float) -> float | None:
    """Seed 000 Eq. 4 (denominator as written there: the absolute gap)."""
    gap = abs(ceiling - weak)
    if gap < 1e-12:
        return None
    return (w2s - weak) / gap


def blind_spot_share(ceiling_correct, w2s_correct, weak_correct) -> float | None:
    """The weak blind-spot share of the W2S model's errors on rows the ceiling gets right (see the
    module docstring)."""
    c, s, w = (np.asarray(x, dtype=bool) for x in (ceiling_correct, w2s_correct, weak_correct))
    regress = c & ~s
    if not regress.any():
        return None
    return float((regress & ~w).sum() / regress.sum())


def predictions(eval_dir: Path, column: str = "weak_label") -> dict[str, tuple[int, int]]:
    """id -> (predicted option, true label) from a scored test split; column: weak_label or a
    probs_<model> column (its argmax)."""
    from pipelines.annotate import read_weak_labels

    t = read_weak_labels(eval_dir)
    pred = t[column].to_pylist()
    if column != "weak_label":
        pred = [int(np.argmax(p)) for p in pred]
    return {i: (p, y) for i, p, y in zip(t["id"].to_pylist(), pred, t["label"].to_pylist())}


def interval(samples) -> list[float] | None:
    """The 95% percentile interval of bootstrap samples (NaNs dropped), or None if none is left."""
    x = np.asarray(samples, dtype=np.float64)
    x = x[~np.isnan(x)]
    return [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))] if x.size else None


def paired_difference(a, b, n_boot: int = 2000, seed: int = 0) -> tuple[float, list[float] | None]:
    """mean(a - b) of two per-row correctness vectors on the same test rows, and its 95% paired
    percentile bootstrap interval (the resample `bootstrap` draws with the same seed)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    return float(d.mean()), interval(d[idx].mean(axis=1))


def pgr_interval(w2s, weak, ceiling) -> list[float] | None:
    """The interval of PGR over paired bootstrap accuracies (resamples with a zero gap dropped)."""
    gap = np.abs(ceiling - weak)
    with np.errstate(divide="ignore", invalid="ignore"):
        return interval(np.where(gap > 1e-12, (w2s - weak) / gap, np.nan))


def bootstrap(correct: dict[str, np.ndarray], supervisor: str, ceiling: str, zero_shot: str | None,
              w2s: list[str], n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired percentile bootstrap over test rows (module docstring, `intervals`)."""
    names = list(correct)
    mat = np.stack([correct[n].astype(np.float64) for n in names])  # models x rows
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, mat.shape[1], size=(n_boot, mat.shape[1]))
    boot = {n: mat[i][idx].mean(axis=1) for i, n in enumerate(names)}  # B accuracies per model
    out = {"n_boot": n_boot, "accuracy": {n: interval(b) for n, b in boot.items()}, "pgr": {}, "gain": {},
           "differences": {}}
    for n in w2s:
        out["pgr"][n] = pgr_interval(boot[n], boot[supervisor], boot[ceiling])
        if zero_shot:
            out["gain"][n] = interval(boot[n] - boot[zero_shot])
    for i, a in enumerate(w2s):
        for b in w2s[i + 1:]:
            ci = interval(boot[a] - boot[b])
            out["differences"][f"{a} - {b}"] = {"diff": float(correct[a].mean() - correct[b].mean()), "ci": ci,
                                                "significant": bool(ci[0] > 0 or ci[1] < 0)}
    return out


def compare(evals: dict[str, Path | tuple[Path, str]], weak_names: list[str], supervisor: str, ceiling: str,
            w2s: list[str], zero_shot: str | None = None) -> dict:
    """Accuracy per evaluated model, PGR / gain over the strong zero-shot / weak blind-spot share per
    W2S model, and their bootstrap intervals. evals["weak"] is the weak ensemble scored on the
    test split: it yields "weak <name>" per model and "weak ensemble"; every other entry is a
    scored folder (its weak_label) or (folder, probs_<model> column) of a pass that scored several."""
    preds = {f"weak {n}": predictions(evals["weak"], f"probs_{n}") for n in weak_names}
    if len(weak_names) > 1:
        preds["weak ensemble"] = predictions(evals["weak"])
    preds.update({name: predictions(*d) if isinstance(d, tuple) else predictions(d)
                  for name, d in evals.items() if name != "weak"})
    ids = sorted(preds[ceiling])
    correct = {n: np.array([p[i][0] == p[i][1] for i in ids]) for n, p in preds.items()}
    acc = {n: float(c.mean()) for n, c in correct.items()}
    out = {"accuracy": acc, "supervisor": supervisor, "zero_shot": zero_shot, "rows": len(ids), "pgr": {},
           "gain": {}, "blind_spot": {}}
    for n in w2s:
        out["pgr"][n] = pgr(acc[n], acc[supervisor], acc[ceiling])
        if zero_shot:
            out["gain"][n] = acc[n] - acc[zero_shot]
        out["blind_spot"][n] = blind_spot_share(correct[ceiling], correct[n], correct[supervisor])
    out["intervals"] = bootstrap(correct, supervisor, ceiling, zero_shot, w2s)
    # per-row correctness ("1"/"0" per row of row_ids): what pipelines/seeds.py aggregates over seeds
    out["row_ids"] = ids
    out["row_correct"] = {n: "".join("1" if x else "0" for x in c) for n, c in correct.items()}
    out["row_pred"] = {n: [int(p[i][0]) for i in ids] for n, p in preds.items()}  # each row's answer
    out["below_zero_shot"] = [n for n, g in out["gain"].items() if g < 0]
    return out


# ----------------------------------------------------------------------------- report


def plot_accuracy(rows: list[dict], weak: float, ceiling: float, path: Path, metric: str = "accuracy",
                  zero_shot: float | None = None) -> None:
    """Bars per model (W2S green) with their 95% intervals where known; the weak supervisor, the
    strong zero-shot and the ceiling as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    names = [r["name"] for r in rows]
    heights = [r["accuracy"] for r in rows]
    err = np.array([[r["accuracy"] - r["ci"][0], r["ci"][1] - r["accuracy"]] if r.get("ci") else [0.0, 0.0]
                    for r in rows]).T
    ax.bar(range(len(rows)), heights, yerr=err, capsize=3,
           color=["#888" if r["kind"] != "w2s" else "#3a7" for r in rows])
    ax.axhline(weak, color="#c33", ls="--", label=f"weak supervisor {weak:.3f}")
    if zero_shot is not None:
        ax.axhline(zero_shot, color="#e90", ls=":", label=f"strong zero-shot {zero_shot:.3f}")
    ax.axhline(ceiling, color="#33c", ls="--", label=f"strong ceiling {ceiling:.3f}")
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"test {metric} (bars: 95% bootstrap interval)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def with_ci(x: float | None, ci: list[float] | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{x:.3f}"


def result_lines(ev: dict) -> list[str]:
    """The results table: accuracy, PGR and gain over the strong zero-shot with 95% intervals."""
    acc, iv = ev["accuracy"], ev.get("intervals", {})
    zs = ev.get("zero_shot")
    lines = [f"| model | test {ev.get('metric', 'accuracy')} [95% CI] | PGR [95% CI] | gain over zero-shot [95% CI] "
             "| weak blind-spot share |", "|---|---|---|---|---|"]
    for n, a in acc.items():
        p, d, g = ev["pgr"].get(n), ev["blind_spot"].get(n), ev.get("gain", {}).get(n)
        w2s = n in ev["pgr"]
        lines.append(f"| {n} | {with_ci(a, iv.get('accuracy', {}).get(n))} | {with_ci(p, iv.get('pgr', {}).get(n)) if w2s else ''} "
                     f"| {with_ci(g, iv.get('gain', {}).get(n)) if w2s and zs else ''} "
                     f"| {'' if n not in ev['blind_spot'] else ('n/a' if d is None else f'{d:.3f}')} |")
    lines += ["", f"PGR = (Acc(w2s) - Acc(weak)) / |Acc(ceiling) - Acc(weak)| (seed 000 Eq. 4), weak = "
              f"`{ev['supervisor']}`.",
              "Weak blind-spot share = among test rows the ceiling gets right and the W2S model gets wrong, the "
              "fraction the weak supervisor gets wrong too (a proxy shaped like seed 002's Deception Score, not "
              "that score: no conflicting objective is trained)."]
    if zs:
        lines.append(f"Gain over zero-shot = Acc(w2s) - Acc(`{zs}`): what training on the weak labels bought over "
                     "not training the strong model at all.")
    if iv:
        lines.append(f"Intervals: 95% percentile bootstrap over the {ev.get('rows', '?')} test rows "
                     f"(B = {iv['n_boot']}, paired: the same resample for every model).")
    lines.append("")
    below = ev.get("below_zero_shot", [])
    for n in below:
        ci = iv.get("gain", {}).get(n)
        sure = "significantly (interval below 0)" if ci and ci[1] < 0 else "within noise (interval spans 0)"
        lines.append(f"**{n} ends below the strong zero-shot** ({ev['gain'][n]:+.3f}, {sure}).")
    if below:
        lines.append("")
    diffs = iv.get("differences", {})
    if diffs:
        sig = [f"{k} ({v['diff']:+.3f})" for k, v in diffs.items() if v["significant"]]
        lines += [f"Differences between W2S methods (paired bootstrap): {len(sig)} of {len(diffs)} significant"
                  + (": " + ", ".join(sig) if sig else "; every other gap is within noise") + ".", ""]
    return lines + lm_lines(ev)


def lm_lines(ev: dict, n_boot: int = 2000, seed: int = 0) -> list[str]:
    """Burns et al.'s generative finetuning (strong.lm_finetune): each "<model> +lm" against the
    same model without it, the paired difference with a bootstrap interval over the test rows."""
    rc = ev.get("row_correct", {})
    pairs = [(n[: -len(" +lm")], n) for n in rc if n.endswith(" +lm") and n[: -len(" +lm")] in rc]
    if not pairs:
        return []
    right = {n: np.array([c == "1" for c in rc[n]], dtype=np.float64) for p in pairs for n in p}
    lines = ["Generative finetuning (`strong.lm_finetune`, seed 002: the LM loss on the unlabelled text first): "
             "each model against the same model without it, paired bootstrap over the test rows.", "",
             "| model | without | with +lm | difference [95% CI] | |", "|---|---|---|---|---|"]
    for base, lm in pairs:
        d, (lo, hi) = paired_difference(right[lm], right[base], n_boot, seed)
        verdict = "within noise" if lo <= 0 <= hi else ("+lm better" if lo > 0 else "+lm worse")
        lines.append(f"| {base} | {right[base].mean():.3f} | {right[lm].mean():.3f} | {d:+.3f} "
                     f"[{lo:+.3f}, {hi:+.3f}] | {verdict} |")
    return lines + [""]


def write_report(root: Path, metrics: dict, sections=()) -> Path:
    """report.md with the results table, the sections of the run's labeller and methods
    (pipelines/methods: each `(root, metrics) -> lines`), stage times and the plots."""
    ev = metrics["evaluation"]
    acc, sup, ceil = ev["accuracy"], ev["supervisor"], ev["ceiling"]
    cis = ev.get("intervals", {}).get("accuracy", {})
    rows = [{"name": n, "accuracy": a, "kind": "w2s" if n in ev["pgr"] else "ref", "ci": cis.get(n)}
            for n, a in acc.items()]
    zs = ev.get("zero_shot")
    plot_accuracy(rows, acc[sup], acc[ceil], root / "accuracy.png", ev.get("metric", "accuracy"),
                  acc.get(zs) if zs else None)
    lines = [f"# w2s run report: {root}", "",
             f"Task: {metrics['data']['source']}, test rows: {metrics['data']['counts']['test']}; "
             f"weak supervisor: `{sup}`; strong: `{metrics['strong_spec']}`.", ""]
    lines += result_lines(ev)
    for section in sections:
        lines += section(root, metrics)
    if "alignment" in metrics:
        lines += alignment_lines(root, metrics)
    lines += stage_lines(metrics)
    path = root / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def stage_lines(metrics: dict) -> list[str]:
    """The report's table of stage wall times and the run's total."""
    return (["| stage | seconds |", "|---|---|"]
            + [f"| {k} | {v.get('seconds', 0):.1f} |" for k, v in metrics["stages"].items()]
            + [f"| total | {metrics['seconds']:.1f} |"])


def plot_win_tie_lose(judge: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1.8))
    left = 0
    for key, color in (("win", "#3a7"), ("tie", "#bbb"), ("lose", "#c33")):
        ax.barh([0], [judge[key]], left=left, color=color, label=f"{key} {judge[key]}")
        left += judge[key]
    ax.set_yticks([])
    ax.set_xlabel(f"test prompts (n={judge['n']}): DPO policy vs SFT policy, impartial judge")
    ax.legend(ncol=3, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.45))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def alignment_lines(root: Path, metrics: dict) -> list[str]:
    """The alignment section: both reward models' pairwise accuracy against chance (0.5) and the
    judge's win / tie / lose, each with its bootstrap interval, and answers side by side."""
    al = metrics["alignment"]
    j, iv = al["judge"], al.get("intervals", {})
    rm_iv, j_iv = iv.get("rm_accuracy", {}), iv.get("judge", {})
    plot_win_tie_lose(j, root / "win_tie_lose.png")
    pairs = metrics["stages"].get("dpo_pairs", {})

    def verdict(ci):  # against chance 0.5 (accuracies) or 0 (win - lose)
        return "" if not ci else ("above" if ci[0] > 0 else "below" if ci[1] < 0 else "within noise of")

    rm = {role: al[f"rm_accuracy_{role}"] for role in ("w2s", "ceiling")}
    chance = {role: verdict([c - 0.5 for c in rm_iv[role]] if rm_iv.get(role) else None) for role in rm}
    wl = j_iv.get("win_minus_lose")
    lines = ["## Alignment: W2S reward model -> DPO pairs -> cDPO", "",
             "| reward model | pairwise accuracy on the test pairs [95% CI] | vs chance (0.5) |", "|---|---|---|",
             f"| W2S reward model (weak labels) | {with_ci(rm['w2s'], rm_iv.get('w2s'))} | {chance['w2s']} |",
             f"| ground-truth reward model (the judge) | {with_ci(rm['ceiling'], rm_iv.get('ceiling'))} | {chance['ceiling']} |",
             "", f"DPO pairs: {pairs.get('pairs', 'n/a')} from {pairs.get('prompts', 'n/a')} prompts. "
             f"DPO changed {al['changed']} of {al['prompts']} greedy test answers.", "",
             "| DPO policy vs SFT policy (impartial judge) | win | tie | lose | win rate [95% CI] | lose rate [95% CI] "
             "| win - lose [95% CI] |", "|---|---|---|---|---|---|---|",
             f"| test prompts (n={j['n']}) | {j['win']} | {j['tie']} | {j['lose']} | "
             f"{with_ci(j['win_rate'], j_iv.get('win_rate'))} | {with_ci(j['lose_rate'], j_iv.get('lose_rate'))} | "
             f"{with_ci((j['win'] - j['lose']) / j['n'] if j['n'] else None, wl)} |", ""]
    if wl:
        said = ("DPO beats SFT" if wl[0] > 0 else "DPO loses to SFT" if wl[1] < 0
                else "DPO and SFT are within noise of each other")
        lines += [f"{said} by the judge (win - lose rate, 95% interval [{wl[0]:+.3f}, {wl[1]:+.3f}]).", ""]
    lines += ["![win / tie / lose](win_tie_lose.png)", "", "Greedy answers to the first test prompts:", "",
              "| prompt | SFT policy | DPO policy |", "|---|---|---|"]

    def cell(s: str, n: int) -> str:  # a table cell: cut, no pipes or newlines
        return s[:n].replace("|", "/").replace("\n", " ")

    lines += [f"| {cell(e['prompt'], 100)} | {cell(e['sft'], 90)} | {cell(e['dpo'], 90)} |" for e in al.get("examples", [])]
    return lines + [""]


def load_metrics(root: Path) -> dict:
    return json.loads((Path(root) / "metrics.json").read_text())
