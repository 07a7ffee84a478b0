"""Training throughput: padded vs length-grouped vs packed batches, in one run.

Two workloads, each trained for the same number of steps in every mode (steps of the modes
interleave, so load from other processes hits all alike). Every mode runs the LLM under
``"sdpa"`` (packed rows: the block-diagonal ``T x T`` mask ``transformers`` builds from the
restarting positions), except ``packed_<n>_varlen``: the batches of ``packed_<n>`` under
``"sdpa_varlen"`` (attention per sample, `groundinggpt.models.varlen_attention`), the same
weights switched with ``set_attn_implementation`` before each step (``--no-varlen`` skips them).

- ``synthetic``: the tiny default model (``experiment=stage2_fine``) on the synthetic stage-2
  mixture. Batches come from the real sampler and collator (``data.group_by_length``,
  ``data.pack_length``); the frozen encoders' outputs are computed once per batch before
  timing (the same work in every mode, and what the feature cache removes in training), so
  the timed step is adapters + LLM forward, backward and AdamW.
- ``realistic``: the tiny LLM width on GroundingGPT-like sequence lengths: an image sample
  holds 576 media tokens (CLIP ViT-L/14 at 336 px), a video 64 (Q-Former), audio 8, plus a
  prompt of 10-40 tokens and an answer whose length is log-uniform in [8, 320] tokens
  (box and span answers of ~15-25 tokens up to instruction answers of a few hundred; a
  modelled distribution, not one read from the released files). Mixture: 55% image, 30%
  video, 15% audio. LLM only (media positions are ordinary tokens here).

Real tokens are the ``attention_mask`` ones (text plus media embeddings; padding excluded);
padding share = padded positions / all positions.

Usage:
    python experiments/throughput.py --steps 30 --out experiments/2026-12-02_throughput
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import subprocess
import time
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from groundinggpt.build import build_datamodule, build_model
from groundinggpt.data.conversation import IGNORE_INDEX
from groundinggpt.data.dataset import GroundingCollator
from groundinggpt.data.mixture import MixtureSampler
from groundinggpt.models.varlen_attention import NAME as VARLEN
from groundinggpt.training.module import media_paths_by_modality
from groundinggpt.training.trainability import apply_trainability

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=30, help="timed steps per mode and workload")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per mode first")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--realistic-batch-size", type=int, default=16)
    p.add_argument(
        "--pack-length",
        type=int,
        nargs="+",
        default=None,
        help="packed row lengths to measure (default: data.max_length)",
    )
    p.add_argument("--realistic-pack-length", type=int, nargs="+", default=[1024])
    p.add_argument(
        "--varlen",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run every packed mode under sdpa_varlen (packed_<n>_varlen)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--out", default=None, help="folder for results.json")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of configs/train.yaml")
    return p.parse_args()


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(
            "train",
            overrides=[f"paths.root_dir={ROOT}", "experiment=stage2_fine", *overrides],
        )


def timed_step(model, optimizer, batch, features=None, **kw) -> float:
    start = time.perf_counter()
    out = model(**batch, **kw) if features is None else model(features=features, **batch, **kw)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def attention_of(mode: str) -> str:
    """The LLM attention implementation a mode is measured with."""
    return VARLEN if mode.endswith("_varlen") else "sdpa"


def with_varlen_modes(batches: dict[str, list], varlen: bool) -> dict[str, list]:
    """``batches`` plus, with ``varlen``, every packed mode's batches again as ``<mode>_varlen``."""
    extra = {f"{m}_varlen": b for m, b in batches.items() if m.startswith("packed_")}
    return {**batches, **extra} if varlen else batches


def interleave(
    run, batches: dict[str, list], warmup: int, llm: torch.nn.Module
) -> dict[str, dict[str, float]]:
    """Step ``i`` of every mode, then step ``i + 1``...; totals per mode after ``warmup``.

    ``llm`` is switched to the mode's `attention_of` before each (untimed).
    """
    totals = {m: {"s": 0.0, "tokens": 0, "positions": 0, "samples": 0} for m in batches}
    for i in range(max(len(b) for b in batches.values())):
        for mode, mode_batches in batches.items():
            if i >= len(mode_batches):
                continue
            batch = mode_batches[i]
            llm.set_attn_implementation(attention_of(mode))
            seconds = run(batch)
            if i >= warmup:
                t = totals[mode]
                t["s"] += seconds
                t["tokens"] += int(batch["attention_mask"].sum())
                t["positions"] += int(batch["attention_mask"].numel())
                t["samples"] += int(batch["size"])
    return {m: {**summarize(t), "attn_implementation": attention_of(m)} for m, t in totals.items()}


def summarize(t: dict[str, float]) -> dict[str, float]:
    return {
        "tokens_per_s": t["tokens"] / t["s"],
        "samples_per_s": t["samples"] / t["s"],
        "padding_share": 1.0 - t["tokens"] / t["positions"],
        "timed_s": t["s"],
        "real_tokens": t["tokens"],
    }


def synthetic(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """The tiny default model on the synthetic stage-2 mixture."""
    cfg = compose_train(["module.feature_cache=null", *args.overrides])
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg)
    apply_trainability(model, **OmegaConf.to_container(cfg.module.trainable, resolve=True))
    dm = build_datamodule(cfg.data, model, tokenizer)
    dm.prepare_data()
    dm.setup()
    pack_lengths = args.pack_length or [int(cfg.data.max_length)]
    dataset = torch.utils.data.ConcatDataset(
        [*dm.datasets["train"].values(), *dm.datasets["replay"].values()]
    )
    n = (args.steps + args.warmup) * args.batch_size
    samplers = {
        "padded": dm._mixture(),
        "length_grouped": MixtureSampler(
            dm._mixture().sizes,
            dm._mixture().weights,
            dm.replay_ratio,
            dm.seed,
            lengths=dm.train_lengths(),
            batch_size=args.batch_size,
            group_steps=int(cfg.data.group_steps),
        ),
    }
    collators = {
        "padded": GroundingCollator(tokenizer.pad_token_id),
        "length_grouped": GroundingCollator(tokenizer.pad_token_id),
    }
    for n_pack in pack_lengths:
        samplers[f"packed_{n_pack}"] = samplers["padded"]
        collators[f"packed_{n_pack}"] = GroundingCollator(tokenizer.pad_token_id, n_pack)
    batches: dict[str, list] = {}
    decoded: dict[int, dict] = {}
    for mode in collators:
        order = samplers[mode].indices(0)[:n].tolist()
        for i in order:
            if i not in decoded:
                decoded[i] = dataset[i]
        chunks = [order[k : k + args.batch_size] for k in range(0, n, args.batch_size)]
        batches[mode] = [collators[mode]([decoded[i] for i in c]) for c in chunks]
        print(f"  {mode}: {len(batches[mode])} batches collated", flush=True)
    batches = with_varlen_modes(batches, args.varlen)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def run(batch):
        with torch.no_grad():
            features = model.encode(batch["media"], media_paths_by_modality(batch))
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "media", "labels")}
        return timed_step(
            model, optimizer, inputs, features, position_ids=batch.get("position_ids")
        )

    return interleave(run, batches, args.warmup, model.llm)


def realistic_lengths(rng: random.Random) -> tuple[int, int]:
    """(prompt tokens incl. media, answer tokens) of one modelled GroundingGPT sample."""
    media = rng.choices([576, 64, 8], weights=[0.55, 0.30, 0.15])[0]
    prompt = 1 + media + 2 + rng.randint(10, 40)  # <s>, media block with start/end, question
    answer = round(math.exp(rng.uniform(math.log(8), math.log(320)))) + 1  # + </s>
    return prompt, answer


def realistic_sample(rng: random.Random, vocab: int, index: int) -> dict:
    prompt, answer = realistic_lengths(rng)
    ids = [1] + [rng.randrange(3, vocab) for _ in range(prompt + answer - 1)]
    labels = [IGNORE_INDEX] * prompt + ids[prompt:]
    return {
        "id": str(index), "task": "modelled", "dataset": "modelled", "input_ids": ids,
        "labels": labels, "prompt_ids": ids[:prompt], "reference": "", "prompt": "",
        "media": {}, "media_paths": {},
    }  # fmt: skip


def realistic(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """The tiny LLM width on GroundingGPT-like lengths (576 / 64 / 8 media tokens)."""
    cfg = compose_train([*args.overrides, "model.llm.config.max_position_embeddings=4096"])
    torch.manual_seed(0)
    llm = hydra.utils.instantiate(cfg.model.llm)
    vocab = llm.get_input_embeddings().weight.shape[0]
    rng = random.Random(0)
    steps = args.steps + args.warmup
    bs = args.realistic_batch_size
    samples = [realistic_sample(rng, vocab, i) for i in range(steps * bs)]
    plain = [samples[k : k + bs] for k in range(0, len(samples), bs)]
    # Length grouping over the same samples: mega-batches of 64 steps sorted by length.
    lengths = torch.tensor([len(s["input_ids"]) for s in samples])
    order = torch.argsort(lengths, descending=True, stable=True)
    grouped = [[samples[i] for i in order[k : k + bs].tolist()] for k in range(0, len(order), bs)]
    random.Random(1).shuffle(grouped)
    collators = {"padded": GroundingCollator(0), "length_grouped": GroundingCollator(0)}
    sources = {"padded": plain, "length_grouped": grouped}
    for n_pack in args.realistic_pack_length:
        collators[f"packed_{n_pack}"] = GroundingCollator(0, n_pack)
        sources[f"packed_{n_pack}"] = plain
    batches = {m: [collators[m](b) for b in sources[m]] for m in collators}
    batches = with_varlen_modes(batches, args.varlen)
    llm.train()
    optimizer = torch.optim.AdamW(llm.parameters(), lr=1e-5)

    def run(batch):
        if "position_ids" in batch:
            inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
            inputs["use_cache"] = False
        else:
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return timed_step(llm, optimizer, {**inputs, "labels": batch["labels"]})

    return interleave(run, batches, args.warmup, llm)


def ratios(results: dict[str, dict[str, float]]) -> dict[str, float]:
    base = results["padded"]["tokens_per_s"]
    return {f"{m}/padded": r["tokens_per_s"] / base for m, r in results.items() if m != "padded"}


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(name: str, results: dict[str, dict[str, float]]) -> None:
    print(f"\n{name}")
    print(f"  {'mode':<24}{'attention':>12}{'real tokens/s':>14}{'samples/s':>11}{'padding':>9}")
    for mode, r in results.items():
        print(
            f"  {mode:<24}{r['attn_implementation']:>12}{r['tokens_per_s']:>14.0f}"
            f"{r['samples_per_s']:>11.2f}{r['padding_share']:>9.1%}"
        )
    print("  ratios (real tokens/s):", {k: round(v, 2) for k, v in ratios(results).items()})


def command_line(args: argparse.Namespace) -> str:
    """The command that repeats this run (flags, then Hydra overrides)."""
    parts = ["python experiments/throughput.py"]
    for key, value in vars(args).items():
        flag = "--" + key.replace("_", "-")
        if key == "overrides" or value is None:
            continue
        if isinstance(value, bool):  # BooleanOptionalAction: --varlen / --no-varlen
            parts.append(flag if value else f"--no-{flag[2:]}")
        else:
            parts.append(
                f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}"
            )
    return " ".join([*parts, *args.overrides])


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = {
        "command": command_line(args),
        "commit": _commit(),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
    }  # fmt: skip
    for name, workload in (("synthetic", synthetic), ("realistic", realistic)):
        print(f"{name}: preparing batches", flush=True)
        results = workload(args)
        report(name, results)
        out[name] = {"modes": results, "ratios": ratios(results)}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(out, indent=2))
        print(f"\nwrote {Path(args.out) / 'results.json'}")


if __name__ == "__main__":
    main()
