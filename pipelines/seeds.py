"""Repeated runs over seeds and their aggregate: `seeds: [0, 1, 2]` in a run config.

    w2s run configs/study.yaml            # a config with seeds: [...]
    w2s run configs/tiny.yaml seeds=[0,1,2]

Each seed s is the whole run under run_dir/seed_<s> with every training seed set to s (each
`OptimConfig.seed` in the tree: weak fine-tuning, the ceiling, every W2S job, reward models, DPO).
The data split stays `data.seed` (the same test rows for every seed) unless `seed_data: true`.
What does not depend on the seed is computed once and copied into the later seeds (their stage
guards then skip it, and refuse it if its config differed): the data split, and, when the weak
models label zero-shot, the weak labels and the weak models' test scores; the strong zero-shot's
test scores always (with the same test rows).

Aggregate (run_dir/metrics.json "seeds", run_dir/report.md, seeds.png):
  mean            per model, the mean over seeds of its test accuracy; PGR and gain of the means
  interval        95% percentile bootstrap, two levels (B = 2000): seeds resampled with replacement,
                  and test rows resampled with replacement (one resample shared by all seeds when
                  they share the test rows, else one per seed; always shared by all models, so
                  differences are paired). It carries both the seed-to-seed spread and the test
                  sampling noise; with 3 seeds the seed level is coarse, which the report says.
  significant     a difference (method - method, method - zero-shot) whose interval excludes 0
"""

from __future__ import annotations

import json
import shutil
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

import numpy as np

from pipelines.evaluate import interval, pgr, pgr_interval, with_ci

N_BOOT = 2000


def seeded(cfg, seed: int):
    """The run config of one seed: its own run_dir, every training seed = `seed`."""
    from training.optim_config import OptimConfig

    def walk(obj):
        if isinstance(obj, OptimConfig):
            return replace(obj, seed=seed)
        if is_dataclass(obj) and not isinstance(obj, type):
            changes = {f.name: walk(getattr(obj, f.name)) for f in fields(obj) if f.init}
            return replace(obj, **changes) if changes else obj
        if isinstance(obj, list):
            return [walk(x) for x in obj]
        return obj

    out = walk(cfg)
    out = replace(out, seeds=[], run_dir=str(cfg.root / f"seed_{seed}"))
    if cfg.seed_data and hasattr(out, "data"):
        out = replace(out, data=replace(out.data, seed=seed))
    return out


def shared_dirs(cfg) -> list[str]:
    """Stage folders (relative to a seed's run_dir) whose output the seed does not change."""
    if cfg.seed_data:
        return []
    out = ["data", "eval/strong_zero-shot"]
    if not cfg.weak.finetune:
        out += ["weak_labels", "eval/weak"]
    return out


def copy_shared(src: Path, dst: Path, names: list[str], log=print) -> list[str]:
    """Copy each complete stage folder (with its _SUCCESS.json) that dst does not have yet."""
    copied = []
    for name in names:
        a, b = src / name, dst / name
        if (a / "_SUCCESS.json").is_file() and not b.exists():
            b.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(a, b)
            copied.append(name)
    if copied:
        log(f"seeds: {dst.name} reuses {', '.join(copied)} from {src.name} (they do not depend on the seed)")
    return copied


def run_seeds(cfg, run_one, log=print, until: str | None = None) -> dict:
    """Run `run_one(seed_cfg, log, until)` per seed, sharing what does not depend on the seed,
    then aggregate into cfg.root (metrics.json, report.md, seeds.png)."""
    per_seed, first = {}, None
    for i, s in enumerate(cfg.seeds):
        sub = seeded(cfg, s)
        log(f"== seed {s} ({i + 1} of {len(cfg.seeds)}): {sub.run_dir}")
        if first is not None:
            copy_shared(first, sub.root, shared_dirs(cfg), log)
        per_seed[s] = run_one(sub, log, until)
        first = first or sub.root
    if until is not None or not all("evaluation" in m for m in per_seed.values()):
        return {"seeds": {"per_seed": {str(s): m.get("seconds") for s, m in per_seed.items()}}}
    agg = aggregate({s: m["evaluation"] for s, m in per_seed.items()})
    agg["seconds"] = {str(s): m["seconds"] for s, m in per_seed.items()}
    metrics = {"seeds": agg, "data": per_seed[cfg.seeds[0]]["data"], "strong_spec": cfg.strong.spec,
               "seconds": round(sum(m["seconds"] for m in per_seed.values()), 2)}
    cfg.root.mkdir(parents=True, exist_ok=True)
    (cfg.root / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
    plot_seeds(agg, cfg.root / "seeds.png")
    lines = [f"# w2s seeds report: {cfg.root}", "",
             f"Task: {metrics['data']['source']}, test rows: {metrics['data']['counts']['test']}; "
             f"strong: `{cfg.strong.spec}`; seeds {cfg.seeds} (per-seed reports: seed_<s>/report.md).", ""]
    lines += seed_lines(agg) + ["![mean accuracy over seeds](seeds.png)", ""]
    (cfg.root / "report.md").write_text("\n".join(lines) + "\n")
    log("\n".join(seed_lines(agg)))
    log(f"seeds: report in {cfg.root / 'report.md'}")
    return metrics


def _correct(ev: dict) -> dict[str, np.ndarray]:
    return {n: np.array([c == "1" for c in s]) for n, s in ev["row_correct"].items()}


def aggregate(evals: dict[int, dict], n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Mean over seeds and two-level bootstrap intervals (module docstring) of every model's
    accuracy, every W2S model's PGR and gain, and every pairwise difference of W2S models."""
    seeds = list(evals)
    first = evals[seeds[0]]
    names = [n for n in first["row_correct"] if all(n in e["row_correct"] for e in evals.values())]
    w2s = [n for n in first["pgr"] if n in names]
    sup, ceil, zs = first["supervisor"], first["ceiling"], first.get("zero_shot")
    shared_rows = all(e["row_ids"] == first["row_ids"] for e in evals.values())
    rng = np.random.default_rng(seed)
    shared_idx = rng.integers(0, len(first["row_ids"]), (n_boot, len(first["row_ids"]))) if shared_rows else None
    per = []  # per seed: [models, B] bootstrap accuracies
    for s in seeds:
        c = _correct(evals[s])
        mat = np.stack([c[n].astype(np.float64) for n in names])
        idx = shared_idx if shared_rows else rng.integers(0, mat.shape[1], (n_boot, mat.shape[1]))
        per.append(mat[:, idx].mean(-1))
    a = np.stack(per)  # [S, M, B]
    pick = rng.integers(0, len(seeds), (n_boot, len(seeds)))
    boot = a.transpose(2, 0, 1)[np.arange(n_boot)[:, None], pick].mean(1)  # [B, M]
    b = {n: boot[:, i] for i, n in enumerate(names)}
    per_seed = {n: [evals[s]["accuracy"][n] for s in seeds] for n in names}
    mean = {n: float(np.mean(v)) for n, v in per_seed.items()}
    out = {"seeds": seeds, "shared_test_rows": shared_rows, "rows": len(first["row_ids"]), "n_boot": n_boot,
           "supervisor": sup, "ceiling": ceil, "zero_shot": zs, "w2s": w2s,
           "accuracy": {n: {"mean": mean[n], "ci": interval(b[n]), "per_seed": per_seed[n]} for n in names},
           "pgr": {}, "gain": {}, "differences": {}}
    for n in w2s:
        out["pgr"][n] = {"mean": pgr(mean[n], mean[sup], mean[ceil]), "ci": pgr_interval(b[n], b[sup], b[ceil]),
                         "per_seed": [evals[s]["pgr"].get(n) for s in seeds]}
        if zs:
            out["gain"][n] = _diff(mean[n] - mean[zs], b[n] - b[zs])
    for i, x in enumerate(w2s):
        for y in w2s[i + 1:]:
            out["differences"][f"{x} - {y}"] = _diff(mean[x] - mean[y], b[x] - b[y])
    return out


def _diff(value: float, samples: np.ndarray) -> dict:
    ci = interval(samples)
    return {"mean": float(value), "ci": ci, "significant": bool(ci and (ci[0] > 0 or ci[1] < 0))}


def seed_lines(agg: dict) -> list[str]:
    """The aggregate table: mean [95% CI] per model, per-seed values, PGR and gain of the means."""
    acc, zs = agg["accuracy"], agg["zero_shot"]
    lines = [f"| model | mean accuracy [95% CI] | per seed | PGR of means [95% CI] | gain over zero-shot [95% CI] |",
             "|---|---|---|---|---|"]
    for n, a in acc.items():
        p, g = agg["pgr"].get(n), agg["gain"].get(n)
        seeds = ", ".join(f"{v:.3f}" for v in a["per_seed"])
        lines.append(f"| {n} | {with_ci(a['mean'], a['ci'])} | {seeds} | {with_ci(p['mean'], p['ci']) if p else ''} "
                     f"| {(with_ci(g['mean'], g['ci']) + (' *' if g['significant'] else '')) if g else ''} |")
    rows = "the same" if agg["shared_test_rows"] else "each seed's own"
    lines += ["", f"Mean over seeds {agg['seeds']}; PGR = (mean Acc(w2s) - mean Acc(weak)) / |mean Acc(ceiling) - "
              f"mean Acc(weak)|, weak = `{agg['supervisor']}`; gain = mean Acc(w2s) - mean Acc(`{zs}`).",
              f"Intervals: 95% two-level percentile bootstrap (B = {agg['n_boot']}): seeds resampled with "
              f"replacement and {rows} {agg['rows']} test rows resampled, paired across models. With "
              f"{len(agg['seeds'])} seeds the seed level is coarse. `*`: the interval excludes 0.", ""]
    gains = [n for n, g in agg["gain"].items() if g["significant"]]
    if zs:
        lines.append("Gain over zero-shot excludes 0 for: " + (", ".join(
            f"{n} ({agg['gain'][n]['mean']:+.3f})" for n in gains) if gains else "no method") + ".")
    diffs = agg["differences"]
    if diffs:
        sig = [f"{k} ({v['mean']:+.3f})" for k, v in diffs.items() if v["significant"]]
        lines.append(f"Differences between W2S methods: {len(sig)} of {len(diffs)} significant"
                     + (": " + ", ".join(sig) if sig else "; every gap is within noise") + ".")
    return lines + [""]


def plot_seeds(agg: dict, path: Path) -> None:
    """Mean accuracy per model with its interval, each seed's value as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(agg["accuracy"])
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for i, n in enumerate(names):
        a = agg["accuracy"][n]
        lo, hi = a["ci"] or (a["mean"], a["mean"])
        ax.bar(i, a["mean"], yerr=[[a["mean"] - lo], [hi - a["mean"]]], capsize=3,
               color="#3a7" if n in agg["w2s"] else "#888")
        ax.scatter([i] * len(a["per_seed"]), a["per_seed"], color="k", s=8, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy: mean over seeds (95% CI), dots: seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
