"""Batched KV-cached evaluation vs a per-sample loop: samples/s of generation, in one run.

Both modes generate the answers of the same benchmark samples with the same weights from
the same pre-decoded inputs (media decoding is excluded, it is the same work in both), with
greedy decoding and ``max_new_tokens`` from the benchmark config:

- ``batched``: the engine's path, ``generate_answers`` on left-padded batches of
  ``--batch-size`` (KV cache on);
- ``per_sample``: one prompt at a time, KV cache on;
- ``per_sample_subset`` / ``per_sample_subset_no_cache``: one prompt at a time with and
  without the KV cache (``use_cache=False``: every new token re-runs the whole sequence), on
  every k-th sample (``--no-cache-samples`` of them, the same task mix).

Modes run in alternating rounds and the median time per mode is kept, so that load from
other processes hits all of them alike. The answers of the batched and per-sample modes are
compared (they must be identical: left padding and the cache change no answer).

Usage:
    python experiments/eval_throughput.py --ckpt outputs/default_final/checkpoints/last.ckpt \
        --per-task 32 --batch-size 64 --rounds 5 --out experiments/2026-11-23_eval_throughput
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir

from groundinggpt.build import build_datamodule, build_model
from groundinggpt.evaluation.datamodule import BenchmarkDataModule
from groundinggpt.evaluation.engine import register_output_capture
from groundinggpt.models.generation import generate_answers

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", default=None, help="weights (.ckpt/.safetensors); none: random init")
    p.add_argument("--per-task", type=int, default=32, help="samples per task (rec/vtg/sl/pope)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-cache-samples", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--out", default=None, help="folder for results.json")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of configs/eval.yaml")
    return p.parse_args()


def load(args: argparse.Namespace):
    root = Path(__file__).resolve().parents[1]
    overrides = [f"paths.root_dir={root}", f"paths.output_dir={root}/outputs/throughput"]
    overrides += [f"ckpt_path={args.ckpt or 'none'}", *args.overrides]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    if args.ckpt:
        model, tokenizer = build_model(cfg, "ckpt_path")
    else:  # random init: answers run to max_new_tokens (the worst case for both modes)
        torch.manual_seed(0)
        tokenizer = hydra.utils.instantiate(cfg.tokenizer)
        model = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer, _convert_="partial")
    register_output_capture(model)
    dm = build_datamodule(cfg.datamodule, model, tokenizer)
    return cfg, model.eval(), tokenizer, dm


def balanced_items(dm: BenchmarkDataModule, per_task: int) -> list[dict]:
    """Decoded items, ``per_task`` of each task, in the engine's (modality-sorted) order."""
    dm.setup()
    counts: dict[str, int] = {}
    items = []
    for i, sample in enumerate(dm.dataset.samples):
        if counts.get(sample.task, 0) < per_task:
            counts[sample.task] = counts.get(sample.task, 0) + 1
            items.append(dm.dataset[i])
    return items


def generate_without_cache(model, tokenizer, batch: dict, gen: dict) -> list[str]:
    """The same greedy decoding with ``use_cache=False`` (``GroundingGPT.generate`` always caches)."""
    embeds = model.splice(batch["prompt_ids"], model.encode(batch["media"]))  # (B, T, D)
    tokens = model.llm.generate(
        inputs_embeds=embeds,
        attention_mask=batch["prompt_mask"],
        use_cache=False,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **gen,
    )  # (B, T_new)
    return [t.strip() for t in tokenizer.batch_decode(tokens, skip_special_tokens=True)]


def run_mode(
    model, tokenizer, dm, items, batch_size: int, gen: dict, cache: bool = True
) -> tuple[float, list[str]]:
    batches = [dm.collate(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    generate = generate_answers if cache else generate_without_cache
    start = time.perf_counter()
    answers: list[str] = []
    with torch.inference_mode():
        for batch in batches:
            answers += generate(model, tokenizer, batch, gen)
    return time.perf_counter() - start, answers


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, model, tokenizer, dm = load(args)
    items = balanced_items(dm, args.per_task)
    gen = {"max_new_tokens": int(cfg.benchmark.max_new_tokens)}
    # Every k-th item: the no-cache subset keeps the task mix (answer lengths) of the whole.
    subset = items[:: max(1, len(items) // args.no_cache_samples)][: args.no_cache_samples]
    modes = {  # samples, batch size, KV cache
        "batched": (items, args.batch_size, True),
        "per_sample": (items, 1, True),
        "per_sample_subset": (subset, 1, True),
        "per_sample_subset_no_cache": (subset, 1, False),
    }
    times: dict[str, list[float]] = {m: [] for m in modes}
    answers: dict[str, list[str]] = {}
    for cache in (True, False):  # warm-up (allocator, kernels) of both paths
        run_mode(model, tokenizer, dm, items[:2], 2, gen, cache)
    for r in range(args.rounds):
        for mode, (its, bs, cache) in modes.items():
            seconds, answers[mode] = run_mode(model, tokenizer, dm, its, bs, gen, cache)
            times[mode].append(seconds)
            print(f"round {r} {mode:20s} {len(its):4d} samples {seconds:8.2f} s", flush=True)
    rate = {m: len(modes[m][0]) / statistics.median(t) for m, t in times.items()}
    result = {
        "samples": len(items),
        "batch_size": args.batch_size,
        "max_new_tokens": gen["max_new_tokens"],
        "ckpt": args.ckpt,
        "seconds": times,
        "samples_per_s": {m: round(v, 3) for m, v in rate.items()},
        "speedup_batched_vs_per_sample": round(rate["batched"] / rate["per_sample"], 2),
        "speedup_cache_vs_no_cache_per_sample": round(
            rate["per_sample_subset"] / rate["per_sample_subset_no_cache"], 2
        ),
        "no_cache_subset": len(subset),
        "mean_answer_chars": round(statistics.mean(len(a) for a in answers["batched"]), 1),
        "answers_identical_batched_vs_per_sample": answers["batched"] == answers["per_sample"],
        "answers_identical_cache_vs_no_cache": answers["per_sample_subset"]
        == answers["per_sample_subset_no_cache"],
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "commit": _commit(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
