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


def realistic_samples(tokenizer, media_tokens, batch_size: int, answer_tokens: int, tiny):
    """A stage-2 mix of one-modality samples (image, video, audio in turn) with varied answers.

    Media tensors have the real sizes (336 px images, 64-frame 224 px videos, 3 audio clips);
    answers are ``answer_tokens`` long on average, from a quarter of it to twice it.
    """
    from groundinggpt.data.conversation import ConversationFormatter
    from groundinggpt.modalities import modality_specs

    fmt = ConversationFormatter(tokenizer, modality_specs(media_tokens))
    size, frames, image = (64, 16, 64) if tiny else (224, 64, 336)
    shapes = {
        "image": (3, image, image),
        "video": (frames, 3, size, size),
        "audio": (3, 1, 128, 204),
    }
    placeholder = {"image": "<image>", "video": "<video>", "audio": "<sound>"}
    phrase = "the red circle is at [0.12, 0.30, 0.56, 0.71]"  # ~24 tokens
    samples = []
    for i in range(batch_size):
        modality = ("image", "video", "audio")[i % 3]
        scale = (0.25, 1.0, 2.0, 0.5)[i % 4]
        answer = " ".join([phrase] * max(1, round(scale * answer_tokens / 24)))
        conv = [
            {"from": "human", "value": f"{placeholder[modality]}\nWhere is the object?"},
            {"from": "gpt", "value": answer},
        ]
        ids, labels = fmt.encode(conv)
        first = next(k for k, lab in enumerate(labels) if lab != -100)
        samples.append({
            "id": str(i), "task": "check", "dataset": "check", "input_ids": ids,
            "labels": labels, "prompt_ids": ids[:first], "reference": answer, "prompt": "",
            "media": {modality: torch.randn(shapes[modality])}, "media_paths": {},
        })  # fmt: skip
    return samples


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


def fit_steps(cfg, module, batch, args) -> dict:
    """``args.steps`` optimizer steps on ``batch``: times, tokens/s, MFU, memory, dtypes."""
    import hydra

    from groundinggpt.training.throughput import llm_flops_per_token

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
    step_s = statistics.median(timer.callback.times[1:] or timer.callback.times)
    mask = batch["attention_mask"]
    tokens = int(mask.sum())
    mean_len = tokens / batch["size"]  # attention term per sample (packed: its own block)
    flops = llm_flops_per_token(module.model.llm, mean_len) * tokens / step_s
    return {
        "rows_x_positions": list(mask.shape),
        "real_tokens": tokens,
        "padding_share": round(1 - tokens / mask.numel(), 4),
        "step_times_s": [round(t, 3) for t in timer.callback.times],
        "median_step_s": round(step_s, 3),
        "tokens_per_s": round(tokens / step_s, 1),
        "mfu_llm": round(flops / (args.peak_tflops * 1e12), 4) if not args.tiny else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if torch.cuda.is_available()
        else None,
        "optimizer_param_dtypes": opt_dtypes,
        "fp32_master_weights": opt_dtypes == ["torch.float32"],
        "frozen_encoder_dtypes": encoder_dtypes,
        "share_of_llm_layer0_down_proj_moved": moved,
        "trainable_parameters": module.trainable_counts,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--strategy", default="fsdp", choices=["fsdp", "deepspeed_zero2", "gpu"])
    p.add_argument("--llm", default="full", choices=["full", "lora"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=6, help="samples per step (mixed)")
    p.add_argument("--layouts", nargs="+", default=["padded", "packed"])
    p.add_argument("--pack-length", type=int, default=2048)
    p.add_argument("--attn", default=None, help="LLM attention, e.g. flash_attention_2")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="H100/H200 bf16 dense")
    p.add_argument("--answer-tokens", type=int, default=256)
    p.add_argument("--tiny", action="store_true", help="the tiny model on CPU (dry run)")
    p.add_argument("--out", type=Path, default=Path("/tmp/gpu_check"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import hydra

    from groundinggpt.data.dataset import GroundingCollator

    cfg = compose(args)
    t0 = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    with device:  # random init directly on the GPU: minutes faster than on the CPU
        model = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer, _convert_="partial")
        module = hydra.utils.instantiate(cfg.module, model=model, tokenizer=tokenizer)
    if args.attn:
        model.llm.set_attn_implementation(args.attn)
    samples = realistic_samples(
        tokenizer, model.media_tokens, args.batch_size, args.answer_tokens, args.tiny
    )
    longest = max(len(s["input_ids"]) for s in samples)
    collators = {
        "padded": GroundingCollator(tokenizer.pad_token_id),
        "packed": GroundingCollator(tokenizer.pad_token_id, max(args.pack_length, longest)),
    }
    report = {"strategy": "cpu (tiny dry run)" if args.tiny else args.strategy, "llm": args.llm,
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "attn_implementation": model.llm.config._attn_implementation,
              "build_s": round(time.perf_counter() - t0, 1), "batch_size": args.batch_size,
              "peak_tflops": args.peak_tflops, "layouts": {}}  # fmt: skip
    for layout in args.layouts:
        batch = collators[layout](samples)
        report["layouts"][layout] = fit_steps(cfg, module, batch, args)
    padded, packed = (report["layouts"].get(k) for k in ("padded", "packed"))
    if padded and packed:
        report["packed_over_padded_tokens_per_s"] = round(
            packed["tokens_per_s"] / padded["tokens_per_s"], 3
        )
    print(json.dumps(report, indent=1))
    name = f"gpu_check_{report['strategy'].split()[0]}_{args.llm}.json"
    (args.out / name).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
