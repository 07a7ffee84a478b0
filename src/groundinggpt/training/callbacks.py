"""Run bookkeeping callbacks.

- `DataMonitor`: counts what training actually consumed (per dataset, per modality) and what
  it skipped (per reason, per dataset), logs it, keeps it across resumes, and aborts the run
  when the skipped share passes a threshold.
- `RunReport`: ``metrics.json`` (flat final metrics, baselines, data counts) and a picture.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist

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


class TooManySkippedError(RuntimeError):
    """The share of skipped training samples passed ``DataMonitor.max_skip_share``."""


_COUNTERS = ("dataset", "modality", "skipped", "skipped_dataset", "flags")


def _gather(counters: dict[str, Counter]) -> dict[str, Counter]:
    """Sum ``counters`` over all ranks (a collective: every rank must call it)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return {k: Counter(v) for k, v in counters.items()}
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, {k: dict(v) for k, v in counters.items()})
    return {k: sum((Counter(p[k]) for p in parts), Counter()) for k in counters}


class DataMonitor(L.Callback):
    """Count consumed and skipped training samples; stop a run that skips too much.

    Counts come from the collated batches (``dataset``, ``media_paths``, ``skipped``,
    ``skipped_info``), i.e. what the training step really received. Every
    ``check_every_n_steps`` batches the skipped share over the whole run so far is summed over
    ranks; once at least ``min_samples`` were drawn, a share above ``max_skip_share`` raises
    `TooManySkippedError` with the counts per reason and example files. Counts are saved in
    checkpoints, so a resumed run continues them.

    Args:
        max_skip_share: largest tolerated ``skipped / (consumed + skipped)``; 1 disables.
        min_samples: samples drawn before the threshold applies (a few early bad files should
            not stop a run).
        check_every_n_steps: batches between two checks (each check is one small all-reduce).
        examples_per_reason: example ``file: detail`` lines kept per skip reason.

    Example:
        >>> trainer = L.Trainer(callbacks=[DataMonitor(max_skip_share=0.05)])
    """

    def __init__(
        self,
        max_skip_share: float = 0.05,
        min_samples: int = 200,
        check_every_n_steps: int = 50,
        examples_per_reason: int = 5,
    ) -> None:
        if not 0.0 <= max_skip_share <= 1.0:
            raise ValueError(f"max_skip_share must be in [0, 1], got {max_skip_share}")
        self.max_skip_share = max_skip_share
        self.min_samples = min_samples
        self.check_every_n_steps = max(1, check_every_n_steps)
        self.examples_per_reason = examples_per_reason
        self.counts: dict[str, Counter] = {k: Counter() for k in _COUNTERS}
        self.examples: dict[str, list[str]] = {}
        self.totals: dict[str, Counter] | None = None  # summed over ranks at the end

    def count(self, batch: Mapping[str, Any]) -> None:
        """Add one collated batch to this rank's counts."""
        self.counts["dataset"].update(batch.get("dataset", []))
        for paths in batch.get("media_paths", []):
            self.counts["modality"].update(paths.keys() or ["text"])
        self.counts["flags"]["truncated"] += sum(batch.get("truncated", []))
        self.counts["skipped"].update(batch.get("skipped", []))
        for info in batch.get("skipped_info", []):
            self.counts["skipped_dataset"][info.get("dataset", "?")] += 1
            examples = self.examples.setdefault(info["skipped"], [])
            if len(examples) < self.examples_per_reason:
                examples.append(f"{info.get('file', '?')}: {info.get('detail', '')}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.count(batch)
        if (batch_idx + 1) % self.check_every_n_steps == 0:
            self.check(trainer, pl_module)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Sum the counts over ranks, log them and raise if too much was skipped."""
        local = torch.tensor(
            [sum(self.counts["dataset"].values()), sum(self.counts["skipped"].values())],
            dtype=torch.float64,
            device=pl_module.device,
        )
        consumed, skipped = (float(v) for v in trainer.strategy.reduce(local, reduce_op="sum"))
        drawn = consumed + skipped
        share = skipped / drawn if drawn else 0.0
        pl_module.log_dict(
            {"data/consumed": consumed, "data/skipped": skipped, "data/skip_share": share},
            on_step=True,
            on_epoch=False,
            rank_zero_only=True,
        )
        if drawn >= self.min_samples and share > self.max_skip_share:
            raise TooManySkippedError(
                f"{skipped:.0f} of {drawn:.0f} training samples ({share:.1%}) were skipped, more "
                f"than max_skip_share={self.max_skip_share:.1%}. Fix the data or raise "
                f"callbacks.data_monitor.max_skip_share.\n{self.describe()}"
            )

    def describe(self, counts: dict[str, Counter] | None = None) -> str:
        """Human-readable counts: skips per reason with example files, consumption."""
        counts = counts or self.counts
        lines = [f"skipped per reason: {dict(counts['skipped'].most_common())}"]
        for reason, examples in self.examples.items():
            lines += [f"  {reason}: {e}" for e in examples]
        lines.append(f"skipped per dataset: {dict(counts['skipped_dataset'].most_common())}")
        lines.append(f"consumed per dataset: {dict(counts['dataset'].most_common())}")
        lines.append(f"consumed per modality: {dict(counts['modality'].most_common())}")
        return "\n".join(lines)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        totals = _gather(self.counts)
        if trainer.is_global_zero:
            log.info(
                "training data after epoch %d:\n%s", trainer.current_epoch, self.describe(totals)
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.totals = _gather(self.counts)
        if trainer.is_global_zero:
            log.info("training data, whole run:\n%s", self.describe(self.totals))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # No collectives here: other ranks may be gone. This rank's counts are what is known.
        self.totals = {k: Counter(v) for k, v in self.counts.items()}
        log.error("training data when the run stopped:\n%s", self.describe())

    def metrics(self) -> dict[str, float]:
        """Flat ``data/*`` keys for metrics.json (totals over ranks once training ended)."""
        counts = self.totals or self.counts
        out = {f"data/consumed/dataset/{k}": float(v) for k, v in counts["dataset"].items()}
        out |= {f"data/consumed/modality/{k}": float(v) for k, v in counts["modality"].items()}
        out |= {f"data/skipped/reason/{k}": float(v) for k, v in counts["skipped"].items()}
        out |= {f"data/skipped/dataset/{k}": float(v) for k, v in counts["skipped_dataset"].items()}
        consumed, skipped = sum(counts["dataset"].values()), sum(counts["skipped"].values())
        out["data/consumed/total"] = float(consumed)
        out["data/skipped/total"] = float(skipped)
        out["data/skip_share"] = skipped / (consumed + skipped) if consumed + skipped else 0.0
        out["data/truncated"] = float(counts["flags"]["truncated"])
        return out

    def state_dict(self) -> dict[str, Any]:
        # Lightning writes rank 0's callback state only, so the counts saved are the sums over
        # ranks (every rank builds the checkpoint, so the collective is safe here) ...
        totals = _gather(self.counts)
        return {"counts": {k: dict(v) for k, v in totals.items()}, "examples": self.examples}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # ... and only rank 0 takes them back, so that the next sum over ranks stays exact.
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if rank == 0:
            saved = state_dict.get("counts", {})
            self.counts = {k: Counter(saved.get(k, {})) for k in _COUNTERS}
            self.examples = dict(state_dict.get("examples", {}))


def _mask_baselines(dm, metrics: dict[str, float]) -> dict[str, float]:
    """``baseline/{split}/{task}/*`` of the mask tasks scored in ``metrics`` (mean training
    mask, whole image; `groundinggpt.training.segmentation.mask_baselines`)."""
    from groundinggpt.training.segmentation import FIRST_MASK_TASKS, mask_baselines

    scored = [t for t in FIRST_MASK_TASKS if any(f"/{t}/ciou" in k for k in metrics)]
    if not scored or not hasattr(dm, "first_masks"):
        return {}
    train = dm.first_masks("train", scored)
    out = {}
    for split in ("val", "test"):
        evals = dm.first_masks(split, scored)
        if evals and any(k.startswith(f"{split}/") for k in metrics):
            base = mask_baselines(train, evals)
            out |= {f"baseline/{split}/{k}": v for k, v in base.items()}
    return out


class RunReport(L.Callback):
    """Write ``metrics.json``, ``predictions.png`` and ``curves.png`` in ``output_dir``.

    ``curves.png`` draws each task's headline validation metric against the optimizer step, one
    point per validation run, with its trivial baseline; ``curves.json`` holds the same numbers.

    ``metrics.json`` is flat: the final ``val/*`` metrics (with ``val/<task>/count``), the
    trivial baselines (``baseline/val/*``: mean training box/span, always "yes"), the one-sided
    binomial p-value of each task's headline metric against its baseline
    (``val/<task>/p_value``), counts of skipped samples
    (``skipped/*``, every split), the training data counts of a `DataMonitor`
    (``data/*``) and the wall time. It is also written when the run stops on an error, so
    that an aborted run still reports what it skipped.

    Args:
        output_dir: the run directory.
    """

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self.start = time.perf_counter()
        self.history: list[dict[str, float]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if values:
            self.history.append({"step": float(trainer.global_step), **values})

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    def metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        out = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith(("val/", "test/"))
        }
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "references"):
            from groundinggpt.grounding.tasks import baseline_metrics

            train_refs = dm.references("train")
            for task, refs in dm.references("replay").items():
                train_refs.setdefault(task, []).extend(refs)
            for split in ("val", "test"):
                # a baseline needs training targets of the same task (stage 1 has none)
                refs = {t: r for t, r in dm.references(split).items() if t in train_refs}
                if refs and any(k.startswith(f"{split}/") for k in out):
                    base = baseline_metrics(train_refs, refs)
                    out |= {f"baseline/{split}/{k}": float(v) for k, v in base.items()}
            out |= _mask_baselines(dm, out)
        from groundinggpt.grounding.tasks import significance

        for split in ("val", "test"):
            out |= significance(out, split)
        skipped = getattr(pl_module, "skipped", {})
        out |= {f"skipped/{k}": float(v) for k, v in skipped.items()}
        out["skipped/total"] = float(sum(skipped.values()))
        from groundinggpt.training.throughput import Throughput

        for callback in trainer.callbacks:
            if isinstance(callback, DataMonitor):
                out |= callback.metrics()
            if isinstance(callback, Throughput):
                out |= callback.metrics(trainer, pl_module)
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
        if self.history:
            from groundinggpt.utils.visualize import plot_curves

            (self.output_dir / "curves.json").write_text(json.dumps(self.history, indent=1))
            baselines = {k: v for k, v in metrics.items() if k.startswith("baseline/")}
            plot_curves(self.history, baselines, self.output_dir / "curves.png")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        try:
            self.write(trainer, pl_module)
        except Exception as err:  # the original error is what the user must see
            log.warning("could not write metrics.json after the error: %s", err)
