"""Seeds of experiment=stage2_fine_seg side by side: cIoU / gIoU, both baselines, the curves.

    python experiments/2026-12-02_pixel_grounding/summarize.py OUT.png RUN_DIR [RUN_DIR ...]

Reads each run's ``metrics.json`` and ``curves.json``, prints a Markdown table (one row per run,
then the worst seed) and draws every run's val/res/ciou per validation step with the better
trivial baseline dashed and 3x that baseline dotted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    out, runs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    print("| run | val/res/ciou | val/res/giou | mean-mask cIoU | whole-image cIoU | ratio | n |")
    print("|---|---|---|---|---|---|---|")
    worst = None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        ciou, base = m["val/res/ciou"], m["baseline/val/res/ciou"]
        ratio = ciou / base
        worst = ratio if worst is None else min(worst, ratio)
        print(
            f"| {run.name} | {ciou:.3f} | {m['val/res/giou']:.3f} | "
            f"{m['baseline/val/res/mean_mask/ciou']:.3f} | "
            f"{m['baseline/val/res/whole_image/ciou']:.3f} | {ratio:.2f}x | "
            f"{int(m['val/res/count'])} |"
        )
        curve = json.loads((run / "curves.json").read_text())
        points = [(c["step"], c["val/res/ciou"]) for c in curve if "val/res/ciou" in c]
        ax.plot(*zip(*points, strict=True), marker="o", label=run.name)
    print(f"\nworst seed: {worst:.2f}x the better baseline")
    ax.axhline(base, ls="--", c="gray", label="better baseline (mean mask)")
    ax.axhline(3 * base, ls=":", c="gray", label="3x baseline")
    ax.set_xlabel("step")
    ax.set_ylabel("val/res/ciou (256 expressions)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
