"""Seeds of one recipe side by side: headline metric, baseline, p-value per task, and the curves.

    python experiments/2026-12-02_learning_default/summarize.py OUT.png RUN_DIR [RUN_DIR ...]

Reads each run's ``metrics.json`` and ``curves.json`` (written by every training run), prints a
Markdown table (one row per run, the worst seed last) and draws every run's curve of each
task's headline metric on one figure, the trivial baseline dashed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HEADLINE = {"rec": "acc@0.5", "sl": "acc@0.5", "vtg": "r1@0.5", "pope": "accuracy"}
EXTRA = {"vtg": "r1@0.7"}


def row(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.json").read_text())


def table(runs: list[Path]) -> str:
    head = "| run | " + " | ".join(f"{t}/{k} (baseline, p)" for t, k in HEADLINE.items()) + " |"
    lines = [head, "|---" * (len(HEADLINE) + 1) + "|"]
    worst = {t: 1.0 for t in HEADLINE}
    for run in runs:
        m = row(run)
        cells = []
        for task, key in HEADLINE.items():
            value = m.get(f"val/{task}/{key}", float("nan"))
            base = m.get(f"baseline/val/{task}/{key}", float("nan"))
            p = m.get(f"val/{task}/p_value", float("nan"))
            n = int(m.get(f"val/{task}/count", 0))
            worst[task] = min(worst[task], value)
            cells.append(f"{value:.3f} ({base:.3f}, {p:.1e}, n={n})")
        lines.append(f"| {run.name} | " + " | ".join(cells) + " |")
    lines.append("| worst seed | " + " | ".join(f"{worst[t]:.3f}" for t in HEADLINE) + " |")
    return "\n".join(lines)


def plot(runs: list[Path], out: Path) -> None:
    keys = [(t, k) for t, k in HEADLINE.items()] + [(t, k) for t, k in EXTRA.items()]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.0))
    for ax, (task, key) in zip(axes, keys, strict=True):
        name = f"val/{task}/{key}"
        for run in runs:
            points = json.loads((run / "curves.json").read_text())
            xs = [p["step"] for p in points if name in p]
            ax.plot(xs, [p[name] for p in points if name in p], marker="o", label=run.name)
        base = row(runs[0]).get(f"baseline/{name}")
        if base is not None:
            ax.axhline(base, color="gray", linestyle="--", label="baseline")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    out, runs = Path(sys.argv[1]), [Path(a) for a in sys.argv[2:]]
    print(table(runs))
    plot(runs, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
