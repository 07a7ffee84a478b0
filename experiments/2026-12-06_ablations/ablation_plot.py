"""One ablation as a table and a dot plot: each arm's seeds per task, baseline dashed.

    python experiments/2026-12-06_ablations/ablation_plot.py OUT.png "ARM=RUN_DIR,RUN_DIR,..." ...

Each ``ARM=...`` names one sweep point and its runs (one per seed): a run folder (its
``metrics.json``, written by every training run) or a JSON file of ``val/*`` numbers. Prints a Markdown table (per-seed values and the
mean of each arm) and draws one panel per task: every seed a dot, the arm's mean a bar, the
trivial baseline dashed. Extra panels for ``val/*_caption/loss`` when the runs logged them
(the replay ablation's held-out stage-1 captions: lower is less forgetting).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = ["rec/acc@0.5", "sl/acc@0.5", "vtg/r1@0.5", "vtg/r1@0.7", "pope/accuracy"]
CAPTIONS = ["image_caption/loss", "video_caption/loss", "audio_caption/loss"]


def load(spec: str) -> tuple[str, list[dict]]:
    arm, runs = spec.split("=", 1)
    paths = [Path(r) for r in runs.split(",")]
    return arm, [json.loads((p if p.is_file() else p / "metrics.json").read_text()) for p in paths]


def main() -> None:
    out, arms = Path(sys.argv[1]), [load(s) for s in sys.argv[2:]]
    keys = METRICS + [k for k in CAPTIONS if all(f"val/{k}" in m for _, ms in arms for m in ms)]
    print("| arm | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for arm, ms in arms:
        cells = []
        for k in keys:
            vals = [m[f"val/{k}"] for m in ms]
            cells.append(
                " / ".join(f"{v:.3f}" for v in vals) + f": **{sum(vals) / len(vals):.3f}**"
            )
        print(f"| {arm} | " + " | ".join(cells) + " |")
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=True):
        for x, (_arm, ms) in enumerate(arms):
            vals = [m[f"val/{k}"] for m in ms]
            ax.bar(x, sum(vals) / len(vals), color="0.85", width=0.6)
            ax.scatter([x] * len(vals), vals, color="C0", zorder=3, s=18)
        base = arms[0][1][0].get(f"baseline/val/{k}")
        if base is not None:
            ax.axhline(base, color="0.4", ls="--", lw=1, label="baseline")
        ax.set_xticks(range(len(arms)), [a for a, _ in arms], rotation=20, fontsize=8)
        ax.set_title(k, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
