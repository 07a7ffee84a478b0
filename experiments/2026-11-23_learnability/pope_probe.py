"""POPE-only answer-loss curve for a set of config overrides (no Lightning loop, no generation).

Prints, per 100 optimizer steps, the mean training loss and the teacher-forced accuracy of the
first answer token (Yes/No) on the POPE samples of each batch: a break from the ~0.235 / 0.5
plateau shows up here hundreds of steps before `val/pope/accuracy` moves.

Usage (from the repository root):
    OMP_NUM_THREADS=1 .venv/bin/python experiments/2026-11-23_learnability/pope_probe.py \
        1500 2e-3 model.llm.config.tie_word_embeddings=true +model.adapters.image.out_norm=0.02
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from groundinggpt.train import build

ROOT = Path(__file__).resolve().parents[2]
BASE = [
    "experiment=stage2_fine",
    "data.stages.stage2_fine.rec=0",
    "data.stages.stage2_fine.vtg=0",
    "data.stages.stage2_fine.sl=0",
    "data.replay_ratio=0",
    "data.val=[pope_val]",
    "logger=[]",
    "callbacks=[]",
    f"paths.root_dir={ROOT}",
    "paths.output_dir=/tmp/pope_probe",
]


def pope_first_token_accuracy(batch: dict, logits: torch.Tensor) -> float | None:
    """Teacher-forced accuracy of the first answer token over the batch's POPE samples."""
    labels = batch["labels"][:, 1:]  # (B, T-1), aligned with logits[:, :-1]
    first = (labels != -100).float().argmax(1)  # (B,) index of the first answer token
    rows = torch.arange(labels.shape[0])
    hit = (logits[:, :-1][rows, first].argmax(-1) == labels[rows, first]).float()  # (B,)
    pope = torch.tensor([t == "pope" for t in batch["task"]])
    return hit[pope].mean().item() if pope.any() else None


def main(steps: int, lr: float, overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=BASE + overrides)
    L.seed_everything(cfg.seed)
    module, dm, _ = build(cfg)
    dm.setup("fit")
    module.train()
    model = module.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30))
    step, start, losses, accs = 0, time.time(), [], []
    while step < steps:
        for batch in dm.train_dataloader():
            out = model(
                batch["input_ids"], batch["attention_mask"], batch["media"], batch["labels"]
            )
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            with torch.no_grad():
                acc = pope_first_token_accuracy(batch, out.logits)
            losses.append(out.loss.item())
            accs += [] if acc is None else [acc]
            step += 1
            if step % 100 == 0:
                mean_acc = sum(accs) / max(1, len(accs))
                print(
                    f"step {step} loss {sum(losses) / len(losses):.3f} "
                    f"pope first-token acc {mean_acc:.3f} ({time.time() - start:.0f}s)",
                    flush=True,
                )
                losses, accs = [], []
            if step >= steps:
                break


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:])
