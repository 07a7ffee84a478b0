"""One-GPU check of the real-scale training path (one command, a few minutes on an H100/H200).

Builds the real ``groundinggpt_7b`` architecture from its config with random weights (no hub:
Vicuna-7B from ``vicuna_7b_skeleton``, CLIP ViT-L/14-336, EVA-g + Q-Former, ImageBind-H audio),
then runs a few stage-2 optimizer steps on a realistic batch (576 image tokens, a 64-frame
video, 3 audio clips, a text answer) under the shipped ``trainer=fsdp`` (or
``deepspeed_zero2``) config on one GPU, with gradient checkpointing, and prints:

- peak GPU memory, median step time, tokens/s;
- the dtype of the parameters the optimizer updates (fp32 master weights expected), the
  dtype the frozen encoders are stored in, and how far a 2e-5 step moved the LLM weights.

Usage (on the GPU machine; hydra-core, omegaconf, antlr4 and decord carried as wheels):

    python experiments/2026-12-02_gpu_check_7b/gpu_check.py --strategy fsdp --llm full
    python experiments/2026-12-02_gpu_check_7b/gpu_check.py --strategy fsdp --llm lora
    python experiments/2026-12-02_gpu_check_7b/gpu_check.py --tiny   # CPU dry run of the script

Full fine-tuning with fp32 masters + AdamW needs ~16 bytes per LLM parameter (~108 GB for
Vicuna-7B) before activations: it should fit in 141 GB with gradient checkpointing, not in
80 GB (then use ``--llm lora``). The script reports which one ran and the peak it reached.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))


def compose(args) -> object:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    if args.tiny:
        overrides = ["experiment=stage2_fine", "trainer=cpu", "trainer.precision=bf16-mixed"]
    else:
        overrides = [
            "experiment=stage2_fine",
            "model=groundinggpt_7b",
            "model/llm=vicuna_7b_skeleton",
            f"trainer={args.strategy}",
            "trainer.devices=1",
        ]
    overrides += [
        "stage.lr=2e-5",
        f"stage.trainable.llm={args.llm}",
        "module.gradient_checkpointing=true",
        "module.scheduler=null",
        f"paths.root_dir={args.out}",
        f"paths.output_dir={args.out}",
    ]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def realistic_batch(model, tokenizer, media_tokens, batch_size: int, answer_tokens: int, tiny):
    """Token ids with every modality's placeholder expanded, media tensors of the real sizes."""
    from groundinggpt.data.conversation import ConversationFormatter, modality_specs

    fmt = ConversationFormatter(tokenizer, modality_specs(media_tokens))
    answer = " ".join(["the red circle is at [0.12, 0.30, 0.56, 0.71]"] * (answer_tokens // 24))
    conv = [
        {"from": "human", "value": "<image>\n<video>\n<sound>\nWhere is the sounding object?"},
        {"from": "gpt", "value": answer},
    ]
    ids, labels = fmt.encode(conv)
    size, frames, image = (64, 16, 64) if tiny else (224, 64, 336)
    batch = {
        "input_ids": torch.tensor([ids] * batch_size),
        "attention_mask": torch.ones(batch_size, len(ids), dtype=torch.long),
        "labels": torch.tensor([labels] * batch_size),
        "media": {
            "image": torch.randn(batch_size, 3, image, image),
            "video": torch.randn(batch_size, frames, 3, size, size),
            "audio": torch.randn(batch_size, 3, 1, 128, 204),
        },
        "size": batch_size,
        "skipped": [],
    }
    return batch


class Timer:
    """Step times (synchronised), peak memory and the optimizer's parameter dtypes."""

    def __init__(self) -> None:
        import lightning as L

        class _Callback(L.Callback):
            def __init__(cb) -> None:
                cb.times: list[float] = []
                cb.start = 0.0

            def on_train_batch_start(cb, trainer, pl_module, batch, batch_idx):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                cb.start = time.perf_counter()

            def on_train_batch_end(cb, trainer, pl_module, outputs, batch, batch_idx):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                cb.times.append(time.perf_counter() - cb.start)

        self.callback = _Callback()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--strategy", default="fsdp", choices=["fsdp", "deepspeed_zero2", "gpu"])
    p.add_argument("--llm", default="full", choices=["full", "lora"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--answer-tokens", type=int, default=256)
    p.add_argument("--tiny", action="store_true", help="the tiny model on CPU (dry run)")
    p.add_argument("--out", type=Path, default=Path("/tmp/gpu_check"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import hydra

    cfg = compose(args)
    t0 = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    with device:  # random init directly on the GPU: minutes faster than on the CPU
        model = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer, _convert_="partial")
        module = hydra.utils.instantiate(cfg.module, model=model, tokenizer=tokenizer)
    build_s = time.perf_counter() - t0
    batch = realistic_batch(
        model, tokenizer, cfg.model.media_tokens, args.batch_size, args.answer_tokens, args.tiny
    )
    loader = torch.utils.data.DataLoader([batch] * args.steps, batch_size=None)
    llm_weight = next(p for n, p in module.named_parameters() if "layers.0.mlp.down_proj" in n)
    before = llm_weight.detach().float().flatten()[:100_000].cpu().clone()

    timer = Timer()
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        max_steps=args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[timer.callback],
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, train_dataloaders=loader)

    opt_dtypes = sorted(
        {str(p.dtype) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    )
    encoder_dtypes = {
        name: sorted({str(p.dtype) for p in b.encoder.parameters()})
        for name, b in module.model.branches.items()
    }
    after_w = next(p for n, p in module.named_parameters() if "layers.0.mlp.down_proj" in n)
    moved = None
    if after_w.numel() == llm_weight.numel() and after_w.numel() > 0:
        after = after_w.detach().float().flatten()[:100_000].cpu()
        moved = float((after != before).float().mean())
    steady = timer.callback.times[1:] or timer.callback.times
    step_s = statistics.median(steady)
    tokens = int(batch["attention_mask"].sum())
    report = {
        "strategy": "cpu (tiny dry run)" if args.tiny else args.strategy,
        "llm": args.llm,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "sequence_tokens": tokens // args.batch_size,
        "batch_size": args.batch_size,
        "build_s": round(build_s, 1),
        "step_times_s": [round(t, 3) for t in timer.callback.times],
        "median_step_s": round(step_s, 3),
        "tokens_per_s": round(tokens / step_s, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if torch.cuda.is_available()
        else None,
        "optimizer_param_dtypes": opt_dtypes,
        "fp32_master_weights": opt_dtypes == ["torch.float32"],
        "frozen_encoder_dtypes": encoder_dtypes,
        "share_of_llm_layer0_down_proj_moved_by_one_run": moved,
        "trainable_parameters": module.trainable_counts,
    }
    if trainer.is_global_zero:
        print(json.dumps(report, indent=1))
        (args.out / f"gpu_check_{report['strategy'].split()[0]}_{args.llm}.json").write_text(
            json.dumps(report, indent=1)
        )


if __name__ == "__main__":
    main()
