"""Eager vs ``torch.compile``-d LLM training steps (the ``module.compile_llm`` switch), one run.

The tiny LLM width of the default config on GroundingGPT-like sequence lengths (576-token
images, 64-token videos, 8-token audio, answers of 8-320 tokens; the same modelled samples as
`experiments/throughput.py`), in length-grouped padded batches. The two models start from the
same weights and take their steps interleaved (eager step i, compiled step i, ...), so machine
noise hits both alike. Compilation time (the first steps of the compiled model, one per new
shape with ``dynamic=False``; few with ``dynamic=True``) is reported apart from the steady
state.

Usage:
    python experiments/compile_bench.py --steps 20 --warmup 4 --out experiments/2026-12-02_throughput
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path

import hydra
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import _commit, compose_train, realistic_sample  # noqa: E402

from groundinggpt.data.dataset import GroundingCollator  # noqa: E402


def grouped_batches(vocab: int, steps: int, batch_size: int) -> list[dict]:
    rng = random.Random(0)
    samples = [realistic_sample(rng, vocab, i) for i in range(steps * batch_size)]
    samples.sort(key=lambda s: -len(s["input_ids"]))
    chunks = [samples[k : k + batch_size] for k in range(0, len(samples), batch_size)]
    random.Random(1).shuffle(chunks)
    collate = GroundingCollator(0)
    return [collate(c) for c in chunks]


def step(llm, optimizer, batch) -> float:
    start = time.perf_counter()
    out = llm(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        labels=batch["labels"],
    )
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=4, help="untimed first steps per model")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dynamic", action="store_true", help="compile with dynamic=True")
    p.add_argument("--out", default=None, help="folder for compile_results.json")
    args = p.parse_args()
    cfg = compose_train(["model.llm.config.max_position_embeddings=4096"])
    torch.manual_seed(0)
    eager = hydra.utils.instantiate(cfg.model.llm).train()
    compiled = copy.deepcopy(eager)
    compiled.compile(dynamic=args.dynamic)
    vocab = eager.get_input_embeddings().weight.shape[0]
    batches = grouped_batches(vocab, args.steps + args.warmup, args.batch_size)
    models = {"eager": eager, "compiled": compiled}
    optimizers = {m: torch.optim.AdamW(x.parameters(), lr=1e-5) for m, x in models.items()}
    totals = {m: {"s": 0.0, "tokens": 0, "warmup_s": 0.0} for m in models}
    for i, batch in enumerate(batches):
        for name, llm in models.items():
            seconds = step(llm, optimizers[name], batch)
            key = "s" if i >= args.warmup else "warmup_s"
            totals[name][key] += seconds
            if i >= args.warmup:
                totals[name]["tokens"] += int(batch["attention_mask"].sum())
        print(f"step {i}: " + ", ".join(f"{m} {t['s'] + t['warmup_s']:.1f}s" for m, t in
                                         totals.items()), flush=True)  # fmt: skip
    result = {
        m: {
            "tokens_per_s": t["tokens"] / t["s"],
            "timed_s": t["s"],
            "first_steps_s": t["warmup_s"],
        }
        for m, t in totals.items()
    }
    ratio = result["compiled"]["tokens_per_s"] / result["eager"]["tokens_per_s"]
    out = {
        "command": "python experiments/compile_bench.py "
        + f"--steps {args.steps} --warmup {args.warmup} --batch-size {args.batch_size}"
        + (" --dynamic" if args.dynamic else ""),
        "commit": _commit(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "modes": result,
        "compiled/eager": ratio,
    }
    print(json.dumps(out, indent=2))
    if args.out:
        path = Path(args.out) / ("compile_results" + ("_dynamic" if args.dynamic else "") + ".json")
        path.write_text(json.dumps(out, indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
