"""Record or check the numbers the tiny profiles produce (behaviour kept across redesigns).

    .venv/bin/python scripts/behaviour_check.py record RUN_ROOT   # RUN_ROOT/<profile>/metrics.json -> fixtures
    .venv/bin/python scripts/behaviour_check.py check RUN_ROOT    # compare to tests/fixtures/behaviour/

A profile's numbers are its metrics.json without wall times, fingerprints, paths and throughput:
accuracies, PGR, weak blind-spot share, weak-label accuracy, counts and losses, each rounded to the printed
precision (3 decimals). tests/test_evaluate.py and friends compare their own tiny runs to the
same fixtures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "behaviour"
PROFILES = ("tiny", "tiny_seam", "tiny_gen", "tiny_align")
# wall times, rates, paths, fingerprints and the manifest's bookkeeping: not behaviour
DROP = {"seconds", "rows_per_s", "prompts_per_s", "fingerprint", "path", "model_dir", "config", "line",
        "weak_seconds", "kind", "stage", "rows_new", "resumed", "strong_forwards", "weak_forwards",
        "strong_forwards_per_row", "weak_forwards_per_row", "rows_run", "history", "steps_per_s",
        "tokens_per_s", "examples_per_s", "mfu", "ray_train", "checkpoint", "row_ids", "row_correct"}


def numbers(obj, precision: int = 3):
    """The behaviour part of a metrics.json, rounded."""
    if isinstance(obj, dict):
        return {k: numbers(v, precision) for k, v in sorted(obj.items()) if k not in DROP}
    if isinstance(obj, list):
        return [numbers(v, precision) for v in obj]
    if isinstance(obj, float):
        return round(obj, precision)
    if isinstance(obj, str) and obj.startswith("/"):
        return "<path>"  # where a run lives is not behaviour
    return obj


def diff(want, got, path: str = "") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for k in sorted(set(want) | set(got)):
            if k not in got:
                out.append(f"{path}.{k}: missing")
            elif k not in want:
                continue  # new information is not a change of behaviour
            else:
                out += diff(want[k], got[k], f"{path}.{k}")
        return out
    if want != got:
        return [f"{path}: {want!r} -> {got!r}"]
    return []


def main(argv: list[str]) -> int:
    mode, root = argv[0], Path(argv[1])
    bad = 0
    for p in PROFILES:
        got = numbers(json.loads((root / p / "metrics.json").read_text()))
        if mode == "record":
            FIXTURES.mkdir(parents=True, exist_ok=True)
            (FIXTURES / f"{p}.json").write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
            print(f"{p}: recorded")
            continue
        changes = diff(json.loads((FIXTURES / f"{p}.json").read_text()), got)
        bad += len(changes)
        print(f"{p}: {'same numbers' if not changes else f'{len(changes)} change(s)'}")
        for c in changes:
            print("   ", c)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
