"""LightningModule for every stage: teacher-forced training, generative grounding validation."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
import torch.distributed as dist

from groundinggpt.grounding.tasks import GroundingMetrics
from groundinggpt.models.generation import decode_answers, generate_answers, generate_tokens
from groundinggpt.models.grounding_model import GroundingGPT, region_inputs, zero_term
from groundinggpt.training.lm_loss import check_reduction, sample_losses, weighted_lm_loss
from groundinggpt.training.lora import lora_settings
from groundinggpt.training.precision import (
    cast_frozen_encoders,
    check_master_weights,
    keep_trainable_fp32,
    resolve_frozen_dtype,
)
from groundinggpt.training.segmentation import (
    MaskMetrics,
    answer_masks,
    segmentation_losses,
    target_masks,
)
from groundinggpt.training.trainability import apply_trainability

log = logging.getLogger(__name__)


def media_paths_by_modality(batch: Mapping[str, Any]) -> dict[str, list[str]]:
    """The media files of a collated batch per modality, in the order the media are stacked."""
    out: dict[str, list[str]] = {}
    for paths in batch.get("media_paths", []):
        for modality, path in paths.items():
            out.setdefault(modality, []).append(str(path))
    return out


class GroundingLitModule(L.LightningModule):
    """Train and evaluate a :class:`GroundingGPT`.

    Args:
        model: the ready-made grounding model.
        tokenizer: its tokenizer (decodes generations).
        optimizer: partial optimizer, called with the trainable parameters.
        scheduler: partial ``(optimizer, num_warmup_steps, num_training_steps) -> LRScheduler``.
        trainable: kwargs of :func:`apply_trainability` (what trains in this stage).
        warmup_ratio: share of the optimisation steps spent in linear warm-up.
        generation: kwargs of ``generate`` during validation/test (``max_new_tokens``...).
        num_plot_samples: how many validation predictions to keep for the picture.
        gradient_checkpointing: recompute activations in the backward pass: ``{llm: bool,
            adapters: bool}`` (``true`` = both), independent of the distributed strategy;
            ``"auto"`` turns it on under DeepSpeed (whose configs rely on it) and leaves it off
            elsewhere (FSDP checkpoints decoder layers through its own policy).
        frozen_dtype: storage dtype of the frozen encoders: ``"auto"`` (bfloat16 when the
            trainer computes in bf16, except under FSDP, whose flat parameters need one
            dtype per unit), ``"bfloat16"``, ``"float32"`` or ``None`` (leave as built).
            Trainable parameters are always fp32 master weights: see `precision.py`.
        feature_cache: ``{dir, modalities?, dtype?}``: keep the outputs of the frozen encoders
            on disk and read them back instead of encoding each media file again
            (`groundinggpt.models.feature_cache`); None encodes every time.
        mask_loss: weights of the mask losses added to the LM loss for batches with masks
            (a model with a pixel decoder): ``{bce: 2.0, dice: 0.5}`` as GLaMM.
        compile_llm: ``torch.compile`` the LLM in place before fitting (``True`` or the
            kwargs of ``nn.Module.compile``, e.g. ``{dynamic: true}``); parameter names and
            checkpoints are unchanged. Measured, not assumed:
            experiments/2026-12-02_throughput/ (compile section).
        loss_reduction: how the next-token loss averages over a batch: ``"token"`` (every
            label token alike, the ``transformers`` default), ``"sample"`` (every sample
            alike) or ``"square"`` (InternVL 2.5's ``1/sqrt(tokens)`` weights); see
            `groundinggpt.training.lm_loss`.

    Example:
        >>> module = GroundingLitModule(model, tok, partial(torch.optim.AdamW, lr=2e-5), sched)
        >>> L.Trainer(max_epochs=1).fit(module, datamodule=dm)
    """

    def __init__(
        self,
        model: GroundingGPT,
        tokenizer,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        trainable: Mapping[str, Any] | None = None,
        warmup_ratio: float = 0.03,
        generation: Mapping[str, Any] | None = None,
        num_plot_samples: int = 8,
        gradient_checkpointing: bool | str | Mapping[str, bool] = False,
        frozen_dtype: str | None = "auto",
        feature_cache: Mapping[str, Any] | None = None,
        mask_loss: Mapping[str, float] | None = None,
        compile_llm: bool | Mapping[str, Any] = False,
        loss_reduction: str = "token",
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.warmup_ratio = warmup_ratio
        self.generation = dict(generation or {"max_new_tokens": 32})
        self.num_plot_samples = num_plot_samples
        spec = dict(trainable or {})
        self.trainable_counts = apply_trainability(self.model, **spec)
        keep_trainable_fp32(self.model)
        self.gradient_checkpointing = gradient_checkpointing
        if gradient_checkpointing and gradient_checkpointing != "auto":
            self._enable_checkpointing(gradient_checkpointing)
        self.frozen_dtype = frozen_dtype
        self.feature_cache = dict(feature_cache) if feature_cache else None
        self.metrics = torch.nn.ModuleDict({"val": GroundingMetrics(), "test": GroundingMetrics()})
        self.mask_loss = {"bce": 2.0, "dice": 0.5, **dict(mask_loss or {})}
        self.compile_llm = compile_llm
        self.loss_reduction = check_reduction(loss_reduction)
        if model.pixel_decoder is not None:
            self.mask_metrics = torch.nn.ModuleDict({"val": MaskMetrics(), "test": MaskMetrics()})
        self.skipped: Counter[str] = Counter()
        self.plot_samples: list[dict[str, Any]] = []

    def train(self, mode: bool = True):
        super().train(mode)
        for branch in self.model.branches.values():  # frozen encoders stay deterministic
            if not any(p.requires_grad for p in branch.encoder.parameters()):
                branch.encoder.eval()
        return self

    def _count_skipped(self, batch: Mapping[str, Any]) -> None:
        self.skipped.update(batch.get("skipped", []))

    def _use_feature_cache(self) -> None:
        spec = self.feature_cache
        processors = getattr(self.trainer.datamodule, "processors", {}) or {}
        dtype = getattr(torch, str(spec.get("dtype", "float32")))
        used = self.model.use_feature_cache(
            spec["dir"],
            spec.get("modalities"),
            dict(processors),
            dtype,
        )
        log.info("frozen-encoder feature cache for %s in %s", used, spec["dir"])
        datamodule = self.trainer.datamodule
        # The region encoder and SAM read pixels: their samples decode images anyway, and the
        # rows they index must be every image of the batch, so those models decode all media.
        pixels = self.model.pixel_decoder is not None or self.model.region_encoder is not None
        if hasattr(datamodule, "read_cached_features") and not pixels:
            datamodule.read_cached_features(self.model.feature_caches())

    def _enable_checkpointing(self, switch: bool | Mapping[str, bool]) -> None:
        self.model.gradient_checkpointing(**({} if switch is True else dict(switch)))

    def setup(self, stage: str) -> None:
        if self.feature_cache and stage == "fit":
            self._use_feature_cache()
        if self.compile_llm and stage == "fit":
            self.model.llm.compile(**({} if self.compile_llm is True else dict(self.compile_llm)))
        if self.gradient_checkpointing == "auto":
            from lightning.pytorch.strategies import DeepSpeedStrategy

            if isinstance(self.trainer.strategy, DeepSpeedStrategy):
                self._enable_checkpointing(True)
        dtype = resolve_frozen_dtype(self.frozen_dtype, self.trainer)
        if dtype is not None:
            cast_frozen_encoders(self.model, dtype)

    # Whether every step must use every trainable parameter (None: when several processes
    # train together). Data parallelism needs it; one process keeps AdamW's semantics for
    # parameters a batch does not use (no gradient: no update, no momentum step).
    full_graph: bool | None = None

    def _needs_full_graph(self) -> bool:
        if self.full_graph is not None:
            return self.full_graph
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def training_step(self, batch: Mapping[str, Any], batch_idx: int):
        self._count_skipped(batch)
        if not batch["size"]:
            # Every sample was skipped (counted above). With several ranks, returning None
            # would skip backward on this rank only and stall the others in their gradient
            # all-reduce; a zero loss through every trainable parameter keeps them in step
            # (this rank contributes zero gradients to the average).
            if not self._needs_full_graph():
                return None
            trainable = [p for p in self.model.parameters() if p.requires_grad]
            return zero_term(trainable, self.model.llm.get_input_embeddings().weight)
        paths = media_paths_by_modality(batch)
        features = self.model.encode(
            batch["media"], paths, **region_inputs(batch), cached=batch.get("cached_features")
        )
        segment = self._segments(batch)
        token_mean = self.loss_reduction == "token"
        out = self.model(
            batch["input_ids"],
            batch["attention_mask"],
            batch["media"],
            batch["labels"] if token_mean else None,  # else weighted below, from the logits
            features,
            position_ids=batch.get("position_ids"),  # packed rows (data.pack_length)
            hidden_states=segment,
        )
        loss = out.loss
        if not token_mean:
            loss = weighted_lm_loss(
                out.logits, batch["labels"], self.loss_reduction, batch.get("sequence_ids")
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["size"])
        if segment:
            bce, dice = segmentation_losses(self.model, out.hidden_states[-1], batch)
            loss = loss + self.mask_loss["bce"] * bce + self.mask_loss["dice"] * dice
            self.log_dict(
                {"train/mask_bce": bce, "train/mask_dice": dice}, batch_size=batch["size"]
            )
        if not self._needs_full_graph():
            return loss
        # Branches without media in this batch still join the graph (with zero gradients; the
        # all-reduce averages in the other ranks' real ones), so DDP needs no
        # `find_unused_parameters` search (see GroundingGPT.absent_branch_term).
        return loss + self.model.absent_branch_term(features)

    def _log_task_losses(self, split: str, logits: torch.Tensor, batch: Mapping[str, Any]) -> None:
        """``{split}/{task}/loss``: the teacher-forced answer loss of each task (mean over its
        answer tokens), a smooth signal of what each task has learned beside its accuracy."""
        sums, counts = sample_losses(logits, batch["labels"])
        for task in sorted(set(batch["task"])):
            rows = [i for i, t in enumerate(batch["task"]) if t == task]
            tokens = counts[rows].sum()
            if tokens > 0:
                value = sums[rows].sum() / tokens
                self.log(f"{split}/{task}/loss", value, batch_size=int(tokens), sync_dist=True)

    def _segments(self, batch: Mapping[str, Any]) -> bool:
        """Whether the batch has masks for this model's pixel decoder to learn from."""
        return self.model.pixel_decoder is not None and "seg_pixels" in batch

    def _eval_step(self, batch: Mapping[str, Any], split: str) -> None:
        self._count_skipped(batch)
        if not batch["size"]:
            return
        # The teacher-forced loss and the generation share one pass through the encoders.
        paths = media_paths_by_modality(batch)
        features = self.model.encode(batch["media"], paths, **region_inputs(batch))
        out = self.model(
            batch["input_ids"], batch["attention_mask"], batch["media"], batch["labels"], features
        )
        self.log(f"{split}/loss", out.loss, batch_size=batch["size"], sync_dist=True)
        self._log_task_losses(split, out.logits, batch)
        tokens = generate_tokens(self.model, self.tokenizer, batch, self.generation, features)
        outputs = decode_answers(self.tokenizer, tokens)
        self.metrics[split].update(batch["task"], outputs, batch["reference"])
        if self._segments(batch):
            masks = answer_masks(self.model, batch, tokens, self.tokenizer.pad_token_id)
            first = [m[0] if m.shape[0] else None for m in masks]
            tasks = [batch["task"][i] for i in batch["seg_owner"]]
            self.mask_metrics[split].update(tasks, first, target_masks(batch))
        if split == "val" and len(self.plot_samples) < self.num_plot_samples:
            self._keep_for_plot(batch, outputs)

    def generate_text(
        self, batch: Mapping[str, Any], features: Mapping[str, torch.Tensor] | None = None
    ) -> list[str]:
        return generate_answers(self.model, self.tokenizer, batch, self.generation, features)

    def _keep_for_plot(self, batch: Mapping[str, Any], outputs: list[str]) -> None:
        seen = Counter(s["task"] for s in self.plot_samples)
        per_task = max(1, self.num_plot_samples // 4)
        for i, text in enumerate(outputs):
            task = batch["task"][i]
            if seen[task] < per_task and len(self.plot_samples) < self.num_plot_samples:
                seen[task] += 1
                self.plot_samples.append(
                    {
                        "task": task,
                        "prompt": batch["prompt"][i],
                        "output": text,
                        "reference": batch["reference"][i],
                        "media_paths": batch["media_paths"][i],
                    }
                )

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.plot_samples = []

    def _log_metrics(self, split: str) -> None:
        values = self.metrics[split].compute()
        if self.model.pixel_decoder is not None:
            values |= self.mask_metrics[split].compute()
            self.mask_metrics[split].reset()
        self.log_dict({f"{split}/{k}": v for k, v in values.items()}, sync_dist=False)
        self.metrics[split].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: every parameter is frozen (check `trainable`)")
        check_master_weights(params, self.trainer)
        optimizer = self.optimizer_factory(params)
        total = int(self.trainer.estimated_stepping_batches)
        if total <= 0:
            raise ValueError(
                "this run would make no optimizer step: the training mixture has fewer samples "
                "than one batch per rank (check the annotation files, data.batch_size and "
                "trainer.limit_train_batches)"
            )
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(
            optimizer,
            num_warmup_steps=round(self.warmup_ratio * total),
            num_training_steps=total,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["skipped"] = dict(self.skipped)
        lora = lora_settings(self.model)
        if lora is not None:  # how to merge this checkpoint's LoRA weights (eval, init_from)
            checkpoint["lora"] = lora

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped = Counter(checkpoint.get("skipped", {}))
