"""Write a Markdown record of a finished run: command, commit, metrics vs baselines, wall time.

    python experiments/record_run.py RUN_DIR OUT_DIR --command "python train.py ..."

Copies ``metrics.json`` and ``predictions.png`` from RUN_DIR into OUT_DIR and writes
OUT_DIR/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
from pathlib import Path

KEYS = [
    "rec/acc@0.5",
    "vtg/r1@0.3",
    "vtg/r1@0.5",
    "vtg/r1@0.7",
    "vtg/miou",
    "sl/acc@0.5",
    "pope/accuracy",
    "pope/precision",
    "pope/recall",
    "pope/f1",
    "pope/yes_ratio",
]


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def table(metrics: dict[str, float], split: str = "val") -> list[str]:
    rows = ["| metric | model | trivial baseline | ratio |", "|---|---|---|---|"]
    for key in KEYS:
        value = metrics.get(f"{split}/{key}")
        if value is None:
            continue
        base = metrics.get(f"baseline/{split}/{key}")
        ratio = f"{value / base:.1f}x" if base else "-"
        base_s = f"{base:.3f}" if base is not None else "-"
        rows.append(f"| `{split}/{key}` | {value:.3f} | {base_s} | {ratio} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--command", required=True)
    parser.add_argument("--wall", default=None, help="wall time of the whole command, e.g. 11m02s")
    args = parser.parse_args()
    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    args.out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.run_dir / "metrics.json", args.out_dir / "metrics.json")
    if (args.run_dir / "predictions.png").exists():
        shutil.copy(args.run_dir / "predictions.png", args.out_dir / "predictions.png")
    lines = [
        f"# {args.out_dir.name}",
        "",
        f"- command: `{args.command}`",
        f"- commit: `{_commit()}`",
        f"- machine: {platform.machine()}, {platform.python_version()}, CPU only",
        f"- wall time (whole command): {args.wall or 'n/a'}; fit: {metrics.get('time/wall_s')} s, "
        f"{int(metrics.get('trainer/global_step', 0))} optimizer steps",
        f"- skipped samples: {int(metrics.get('skipped/total', 0))}",
        "",
        *table(metrics),
        "",
        'Baselines: mean training box (rec, sl), mean training span (vtg), always "yes" (pope).',
        "",
        "![predictions](predictions.png)",
        "",
    ]
    (args.out_dir / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
