"""End-of-run report: ``metrics.json`` (flat final metrics + baselines) and a prediction picture."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

log = logging.getLogger(__name__)


def _load_plot_media(sample: dict[str, Any], processors: dict[str, Any]) -> dict[str, Any]:
    """Add the padded image / a few video frames the model saw, as uint8 arrays, to ``sample``."""
    out = dict(sample)
    paths = sample.get("media_paths", {})
    try:
        if "image" in paths and "image" in processors:
            out["image"] = np.asarray(processors["image"].load_padded(paths["image"]))
        if "video" in paths:
            import decord

            vr = decord.VideoReader(paths["video"])
            idx = np.linspace(0, len(vr) - 1, 6).round().astype(int)
            out["frames"] = list(vr.get_batch(list(idx)).asnumpy())
    except Exception as err:  # a picture must never fail a finished run
        log.warning("could not load media for the prediction plot: %s", err)
    return out


class RunReport(L.Callback):
    """Write ``metrics.json`` and ``predictions.png`` in ``output_dir`` when fitting ends.

    ``metrics.json`` is flat: the final ``val/*`` metrics, the trivial baselines
    (``baseline/val/*``: mean training box/span, always "yes"), counts of skipped samples
    (``skipped/*``) and the wall time.

    Args:
        output_dir: the run directory.
    """

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self.start = time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        out = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith(("val/", "test/"))
        }
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "references"):
            from groundinggpt.grounding.metrics import baseline_metrics

            train_refs = dm.references("train")
            for task, refs in dm.references("replay").items():
                train_refs.setdefault(task, []).extend(refs)
            for split in ("val", "test"):
                # a baseline needs training targets of the same task (stage 1 has none)
                refs = {t: r for t, r in dm.references(split).items() if t in train_refs}
                if refs and any(k.startswith(f"{split}/") for k in out):
                    base = baseline_metrics(train_refs, refs)
                    out |= {f"baseline/{split}/{k}": float(v) for k, v in base.items()}
        out |= {f"skipped/{k}": float(v) for k, v in pl_module.skipped.items()}
        out["skipped/total"] = float(sum(pl_module.skipped.values()))
        out["time/wall_s"] = round(time.perf_counter() - self.start, 1)
        out["trainer/global_step"] = float(trainer.global_step)
        return out

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metrics = self.metrics(trainer, pl_module)
        (self.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        log.info("wrote %s", self.output_dir / "metrics.json")
        samples = getattr(pl_module, "plot_samples", [])
        if samples:
            from groundinggpt.utils.visualize import plot_predictions

            processors = getattr(trainer.datamodule, "processors", {})
            media = [_load_plot_media(s, processors) for s in samples]
            plot_predictions(media, self.output_dir / "predictions.png")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module)
