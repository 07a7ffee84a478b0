"""POPE accuracy vs step of several runs, one panel per answer form / lever (every seed a line).

    python experiments/2026-12-06_existence/pope_curves.py OUT.png "TITLE=RUN,RUN,..." ...

RUN is a run folder with the `curves.json` every training run writes. The always-"yes"
baseline (0.5) is dashed; the bar of the default (0.75) dotted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

KEY = "val/pope/accuracy"


def main() -> None:
    out, panels = Path(sys.argv[1]), [arg.split("=", 1) for arg in sys.argv[2:]]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 3.2), sharey=True, squeeze=False
    )
    for ax, (title, runs) in zip(axes[0], panels, strict=True):
        for run in runs.split(","):
            rows = [r for r in json.loads((Path(run) / "curves.json").read_text()) if KEY in r]
            label = Path(run).name.rsplit("_", 1)[-1]
            ax.plot([r["step"] for r in rows], [r[KEY] for r in rows], marker="o", label=label)
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.axhline(0.75, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(0.4, 1.02)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel(KEY)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
