"""Compare two runs' metrics.json and two evals' predictions.jsonl key by key.

Keys that measure the machine, not the model (``perf/*``, wall time) are listed apart: they
differ between any two runs. Everything else must be equal, float for float.

Usage: python compare.py RUN_BEFORE RUN_AFTER EVAL_BEFORE EVAL_AFTER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MACHINE = ("perf/", "time/", "wall")


def machine_key(key: str) -> bool:
    return any(key.startswith(p) or p in key for p in MACHINE)


def compare_metrics(a: Path, b: Path) -> int:
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    model_keys = sorted(k for k in set(ma) | set(mb) if not machine_key(k))
    differ = [k for k in model_keys if ma.get(k) != mb.get(k)]
    print(
        f"metrics.json: {len(model_keys)} model keys, {len(differ)} differ;"
        f" {len(set(ma) | set(mb)) - len(model_keys)} machine keys (perf/*, time) not compared"
    )
    for k in differ:
        print(f"  {k}: {ma.get(k)!r} -> {mb.get(k)!r}")
    return len(differ)


def compare_predictions(a: Path, b: Path) -> int:
    la, lb = ((p / "predictions.jsonl").read_text().splitlines() for p in (a, b))
    differ = sum(x != y for x, y in zip(la, lb, strict=False)) + abs(len(la) - len(lb))
    print(f"predictions.jsonl: {len(la)} vs {len(lb)} lines, {differ} differ")
    ea, eb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    keys = sorted(k for k in set(ea) | set(eb) if not machine_key(k))
    bad = [k for k in keys if ea.get(k) != eb.get(k)]
    print(f"eval metrics.json: {len(keys)} model keys, {len(bad)} differ")
    for k in bad:
        print(f"  {k}: {ea.get(k)!r} -> {eb.get(k)!r}")
    return differ + len(bad)


if __name__ == "__main__":
    run_a, run_b, eval_a, eval_b = map(Path, sys.argv[1:5])
    n = compare_metrics(run_a, run_b) + compare_predictions(eval_a, eval_b)
    print("IDENTICAL" if n == 0 else f"{n} DIFFERENCES")
    sys.exit(1 if n else 0)
