"""The benchmark evaluation loop: batched KV-cached generation inside Lightning ``test``.

:class:`BenchmarkEvaluator` generates answers batch by batch, scores them with the benchmark
scorer, accumulates torchmetrics states (sums, so a DDP sync is exact) and gathers the
per-sample predictions of every rank into one ``predictions.jsonl``. :func:`evaluate` is the
body of ``eval.py``.

``metrics.json`` keys: ``{prefix}/{task}/{metric}`` (``test/rec/acc@0.5``, as ``val/rec/...``
in training; masks: ``test/res/ciou``, ``test/avs/fscore``, ``test/gcg/ap50``, see
`groundinggpt.evaluation.mask_scoring`), ``{prefix}/{task}/count`` and
``{prefix}/{task}/skipped``, plus unprefixed
``skipped/total``, ``skipped/<error>``, ``samples/total``, ``time/wall_s`` and
``time/samples_per_s``; `evaluate` adds ``benchmark/annotation_sha256``,
``benchmark/samples_read`` and, for splits with a standard size, ``benchmark/standard_count``
and ``benchmark/standard_split`` (1 or 0, with a warning), see `provenance`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from groundinggpt.build import build_datamodule, build_model
from groundinggpt.evaluation.datamodule import Skipped
from groundinggpt.evaluation.gallery import write_gallery
from groundinggpt.evaluation.provenance import provenance
from groundinggpt.evaluation.sample import MASK_TASKS
from groundinggpt.evaluation.scoring import EVAL_TASKS, compute_quietly, score, task_metrics
from groundinggpt.grounding.masks import encode_mask
from groundinggpt.models.generation import decode_answers, generate_tokens
from groundinggpt.models.grounding_model import GroundingGPT
from groundinggpt.training.segmentation import answer_masks

log = logging.getLogger(__name__)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def prediction_row(
    index: int, sample, output: str | None, result: Mapping[str, Any], skip: Skipped | None = None
) -> dict[str, Any]:
    """One line of ``predictions.jsonl``: what was asked, answered, parsed and scored.

    ``skipped`` holds the reason a sample never reached the model (None otherwise) and
    ``skipped_kind`` its category, the key of the ``skipped/<kind>`` counts. Mask tasks add
    the columns of ``result["row"]``: ``num_masks``, ``mask_ious`` (gcg: ``phrases``).

    Example:
        >>> row = prediction_row(0, sample, "[0.1, 0.2, 0.5, 0.6]", score(sample, "[0.1, ...]"))
        >>> row["prediction"], row["score"]  # doctest: +SKIP
        ([16.0, 2.0, 80.0, 66.0], 0.42)
    """
    return {
        "id": sample.id,
        "index": index,
        "task": sample.task,
        "prompt": sample.question,
        "output": output,
        "prediction": _jsonable(result["prediction"]),
        "target": _jsonable(result["target"]),
        "score": float(result["score"]),
        "skipped": skip.reason if skip else None,
        "skipped_kind": skip.kind if skip else None,
        "media": dict(sample.media),
        **result.get("row", {}),
    }


def gather_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's rows on every rank (a no-op without a process group).

    Example:
        >>> rows = gather_rows(self.rows)  # inside on_test_epoch_end, on each rank
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(rows)
    parts: list[list[dict[str, Any]] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, rows)
    return [row for part in parts for row in part or []]


def merge_rows(rows: Sequence[dict[str, Any]], expected: int | None = None) -> list[dict]:
    """Rows in benchmark order, each sample once; a duplicate or missing sample is a bug.

    Raises:
        RuntimeError: when a sample id appears twice or the count differs from ``expected``.

    Example:
        >>> merge_rows([{"id": "b", "index": 1}, {"id": "a", "index": 0}], expected=2)
        [{'id': 'a', 'index': 0}, {'id': 'b', 'index': 1}]
    """
    ids = Counter(r["id"] for r in rows)
    dup = [i for i, n in ids.items() if n > 1]
    if dup:
        raise RuntimeError(f"{len(dup)} samples were evaluated more than once, e.g. {dup[:3]}")
    if expected is not None and len(rows) != expected:
        raise RuntimeError(f"evaluated {len(rows)} samples, the benchmark has {expected}")
    return sorted(rows, key=lambda r: r["index"])


def register_output_capture(model: torch.nn.Module) -> None:
    """Let the Hugging Face sub-models of ``model`` return hidden states in this process.

    transformers 5 records ``output_hidden_states`` through a per-class registry that is
    filled when a model is *constructed*; a model unpickled in a spawned process (Lightning
    ``ddp_spawn``) was never constructed there, so CLIP would return no hidden states. A
    throwaway instance of each class on the meta device (no memory, no weights) fills it.

    Example:
        >>> register_output_capture(model)  # in LightningModule.setup, in every process
    """
    from transformers import PreTrainedModel

    classes = {type(m): m.config for m in model.modules() if isinstance(m, PreTrainedModel)}
    for cls, config in classes.items():
        with torch.device("meta"):
            cls(config)


class BenchmarkEvaluator(L.LightningModule):
    """Evaluate a :class:`GroundingGPT` on one benchmark with ``Trainer.test``.

    Writes ``metrics.json`` and ``predictions.jsonl`` into ``output_dir`` (rank 0) at the end
    of the test epoch; the metrics are also logged (``trainer.callback_metrics``).

    Args:
        model: the grounding model, weights loaded.
        tokenizer: its tokenizer.
        generation: kwargs of ``generate`` (``max_new_tokens``; greedy unless ``do_sample``).
        prefix: split prefix of the metric keys (``test``; ``val`` to read next to training).
        output_dir: where to write the files; None writes nothing.
        tasks: tasks to keep a metric for (samples of other tasks raise).
        save_masks: also write each answer's predicted masks (compressed COCO RLE, original
            pixels) into its prediction row as ``masks``.
        gcg_java: GCG's METEOR and PTB tokenizer need Java: None uses it when on PATH.

    Example:
        >>> evaluator = BenchmarkEvaluator(model, tok, {"max_new_tokens": 32}, output_dir="run")
        >>> L.Trainer(use_distributed_sampler=False).test(evaluator, datamodule=dm)
    """

    def __init__(
        self,
        model: GroundingGPT,
        tokenizer,
        generation: Mapping[str, Any] | None = None,
        prefix: str = "test",
        output_dir: str | None = None,
        tasks: Sequence[str] = EVAL_TASKS,
        save_masks: bool = False,
        gcg_java: bool | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.generation = dict(generation or {"max_new_tokens": 32})
        self.prefix = prefix
        self.output_dir = Path(output_dir) if output_dir else None
        self.metrics = torch.nn.ModuleDict({t: task_metrics(t, gcg_java) for t in tasks})
        self.save_masks = save_masks
        self.rows: list[dict[str, Any]] = []
        self.results: dict[str, float] = {}
        self._start = 0.0

    def setup(self, stage: str) -> None:
        register_output_capture(self.model)  # runs in every (possibly spawned) process
        for metric in self.metrics.values():
            # Spawned processes receive the states in shared memory: fresh tensors per process.
            metric.reset()

    def run_batch(self, batch: Mapping[str, Any]) -> list[tuple[dict, dict]]:
        """Generate and score a batch; returns ``(score result, prediction row)`` per sample.

        Skipped samples are scored as misses (``score(sample, None)``).
        """
        out = []
        if batch["size"]:
            tokens = generate_tokens(self.model, self.tokenizer, batch, self.generation)
            answers = decode_answers(self.tokenizer, tokens)
            masks = self.answer_masks(batch, tokens)
            rows = zip(batch["index"], batch["samples"], answers, strict=True)
            for i, (index, sample, text) in enumerate(rows):
                result = score(sample, text, masks.get(i))
                out.append((result, self._row(index, sample, text, result)))
        skips: list[Skipped] = batch.get("skipped_samples", [])
        for skip in skips:
            result = score(skip.sample, None)
            out.append((result, prediction_row(skip.index, skip.sample, None, result, skip)))
        return out

    def answer_masks(self, batch: Mapping[str, Any], tokens: torch.Tensor) -> dict[int, Any]:
        """Batch row -> ``(n, H, W)`` mask logits in original pixels of its generated ``[SEG]``s.

        Only rows with SAM's view of their image (``seg_owner``, the mask benchmarks) get an
        entry; the teacher-forced pass is left out when no answer wrote a ``[SEG]``.
        """
        owners = batch.get("seg_owner") or []
        seg_id = getattr(self.model, "seg_token_id", None)
        if not owners or seg_id is None or not (tokens[owners] == seg_id).any():
            return {}
        logits = answer_masks(self.model, batch, tokens, self.tokenizer.pad_token_id, logits=True)
        return dict(zip(owners, logits, strict=True))

    def _row(self, index: int, sample, text: str, result: Mapping[str, Any]) -> dict[str, Any]:
        row = prediction_row(index, sample, text, result)
        if self.save_masks and sample.task in MASK_TASKS:
            row["masks"] = [encode_mask(m > 0) for m in result["logits"]]
        return row

    def on_test_epoch_start(self) -> None:
        self.rows = []
        self._start = time.perf_counter()

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        by_task: dict[str, list[dict]] = {}
        for result, row in self.run_batch(batch):
            if row["task"] not in self.metrics:
                raise ValueError(f"sample {row['id']}: task {row['task']!r} has no metric here")
            by_task.setdefault(row["task"], []).append(result)
            self.rows.append(row)
        for task, results in by_task.items():
            self.metrics[task].update(results)

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        return [row for _, row in self.run_batch(batch)]

    def _metric_values(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for task, metric in self.metrics.items():  # same order on every rank: syncs line up
            computed = compute_quietly(metric)  # an empty task on this rank is expected
            if computed.get(f"{task}/count", 0) > 0:
                values.update({f"{self.prefix}/{k}": v for k, v in computed.items()})
            metric.reset()
        return values

    def _expected_count(self) -> int | None:
        """Benchmark size, unless batches were limited on purpose (``limit_test_batches``)."""
        dataset = getattr(getattr(self.trainer, "datamodule", None), "dataset", None)
        if dataset is None or self.trainer.limit_test_batches not in (None, 1.0):
            return None
        return len(dataset)

    def on_test_epoch_end(self) -> None:
        values = self._metric_values()
        rows = merge_rows(gather_rows(self.rows), self._expected_count())
        wall = time.perf_counter() - self._start
        kinds = Counter(r["skipped_kind"] for r in rows if r["skipped"] is not None)
        values |= {f"skipped/{k}": float(n) for k, n in kinds.items()}
        values["skipped/total"] = float(sum(kinds.values()))
        values["samples/total"] = float(len(rows))
        values["time/wall_s"] = round(wall, 2)
        values["time/samples_per_s"] = round(len(rows) / max(wall, 1e-9), 3)
        self.results = values
        self.log_dict(values, sync_dist=False, rank_zero_only=True)
        if self.trainer.is_global_zero and self.output_dir is not None:
            write_outputs(self.output_dir, values, rows)
            try:
                write_gallery(self.output_dir, rows)
            except Exception as err:  # pictures must never cost the metrics already written
                log.warning("could not draw the worst/best gallery: %s", err)


def write_outputs(output_dir: str | Path, metrics: Mapping[str, float], rows: Sequence[dict]):
    """Write ``metrics.json`` (flat, sorted keys) and ``predictions.jsonl`` (one row per line).

    Example:
        >>> write_outputs("outputs/eval/run", {"test/rec/acc@0.5": 0.5}, rows)
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(dict(metrics), indent=2, sort_keys=True))
    with open(output_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    log.info("wrote %s and %s", output_dir / "metrics.json", output_dir / "predictions.jsonl")


def format_table(metrics: Mapping[str, float]) -> str:
    """A two-column table of the metrics, sorted by key (so grouped by split and task).

    Example:
        >>> print(format_table({"test/rec/acc@0.5": 0.25}))
        metric            value
        ----------------  -----
        test/rec/acc@0.5  0.2500
    """
    width = max(len(k) for k in metrics) if metrics else 0
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  -----"]
    for key in sorted(metrics):
        value = metrics[key]
        shown = f"{value:.4f}" if isinstance(value, float) and not value.is_integer() else value
        lines.append(f"{key.ljust(width)}  {shown}")
    return "\n".join(lines)


def segment_kwargs(model: GroundingGPT) -> dict[str, int]:
    """``segment_size`` for the benchmark data module: the pixel decoder's SAM input side.

    Example:
        >>> segment_kwargs(tiny_seg_model)  # doctest: +SKIP
        {'segment_size': 64}
    """
    decoder = getattr(model, "pixel_decoder", None)
    return {} if decoder is None else {"segment_size": int(decoder.image_size)}


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Body of ``eval.py``: build, ``Trainer.test``, print the table; returns the metrics.

    Example:
        >>> evaluate(compose("eval", ["benchmark=pope", "ckpt_path=run/checkpoints/last.ckpt"]))
    """
    L.seed_everything(cfg.seed, workers=True)
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=False))
    model, tokenizer = build_model(cfg, "ckpt_path")
    output_dir = str(cfg.paths.output_dir)
    datamodule = build_datamodule(cfg.datamodule, model, tokenizer, **segment_kwargs(model))
    evaluator = hydra.utils.instantiate(
        cfg.evaluator, model=model, tokenizer=tokenizer, output_dir=output_dir
    )
    # Our batch sampler shards without padding; Lightning's would repeat samples.
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        use_distributed_sampler=False,
    )
    trainer.test(evaluator, datamodule=datamodule, verbose=False)  # we print our own table
    if not trainer.is_global_zero:
        return evaluator.results
    # Read back what rank 0 wrote: with spawned workers this process holds no results.
    metrics = json.loads((Path(output_dir) / "metrics.json").read_text())
    metrics |= provenance(cfg.benchmark, int(metrics["samples/total"]))
    (Path(output_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"\n{cfg.benchmark.name}: {int(metrics['samples/total'])} samples -> {output_dir}")
    print(format_table(metrics))
    return metrics
