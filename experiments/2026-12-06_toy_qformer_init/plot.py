"""Plot VTG-only validation curves of the runs in runs/*.json (r1@0.5 vs step, baseline dashed).

Usage: python experiments/2026-12-06_toy_qformer_init/plot.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
LABELS = {
    "vtg_only": "Q-Former init 0.02 (before)",
    "vtg_nodist": "0.02, no distractor shape",
    "vtg_init": "fan-in init 0.125 (now)",
}
BASELINE = 0.30078125  # mean training span, val/vtg r1@0.5 (baseline/val/vtg/r1@0.5)


def main() -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, label in LABELS.items():
        path = HERE / "runs" / f"{name}.json"
        if path.exists():
            val = json.loads(path.read_text())["val"]
            ax.plot(val["step"], val["val/vtg/r1@0.5"], marker="o", label=label)
    ax.axhline(BASELINE, ls="--", c="gray", label="mean-span baseline")
    ax.set(xlabel="step (batch 16, VTG only)", ylabel="val/vtg/r1@0.5", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "vtg_only_curves.png", dpi=120)


if __name__ == "__main__":
    main()
