"""Console commands (installed by pip): the same Hydra apps as ``train.py``, ``eval.py``, ``infer.py``.

``groundinggpt-train experiment=stage2_fine`` works from any folder: the configs ship inside the
package (``groundinggpt/configs``). Add a folder of your own configs with Hydra's search path,
e.g. ``groundinggpt-train hydra.searchpath=[file:///home/me/my_configs] experiment=my_exp``
(an ``experiment/my_exp.yaml`` there composes with the shipped groups). Run outputs go under
the current folder (``outputs/``), or ``PROJECT_ROOT`` when set.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

CONFIG_PATH = "pkg://groundinggpt.configs"


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def train_main(cfg: DictConfig) -> None:
    """``groundinggpt-train``: fit (and optionally test) the configured model."""
    from hydra.core.hydra_config import HydraConfig

    from groundinggpt.train import train

    train(cfg, HydraConfig.get().overrides.task)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def eval_main(cfg: DictConfig) -> None:
    """``groundinggpt-eval``: evaluate a checkpoint on a benchmark."""
    from groundinggpt.evaluation.engine import evaluate

    evaluate(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="infer")
def infer_main(cfg: DictConfig) -> None:
    """``groundinggpt-infer``: ask a checkpoint about an image, a video and/or a sound."""
    from groundinggpt.evaluation.inference import infer

    infer(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="demo")
def demo_main(cfg: DictConfig) -> None:
    """``groundinggpt-demo``: serve a checkpoint as a web page (Gradio, the ``demo`` extra)."""
    from groundinggpt.demo import launch

    launch(cfg)


def convert_main(argv: list[str] | None = None) -> None:
    """``groundinggpt-convert``: the released-checkpoint converters (GroundingGPT; ``glamm SRC
    OUT`` for GLaMM), or ``merge-lora CKPT --out X``.

    ``merge-lora`` rebuilds the run's model from its ``.hydra/config.yaml`` (found from the
    checkpoint's folder, or ``--config``), loads the checkpoint (LoRA merged by peft) and writes
    plain weights that ``ckpt_path=`` / ``init_from=`` load without peft.
    """
    import argparse
    import logging
    import sys
    from pathlib import Path

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["merge-lora"]:
        from groundinggpt.convert.__main__ import main

        return main(argv)
    from groundinggpt.build import merge_lora_checkpoint

    p = argparse.ArgumentParser(prog="groundinggpt-convert merge-lora")
    p.add_argument("ckpt", type=Path, help="a LoRA run's Lightning checkpoint")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors")
    p.add_argument("--config", type=Path, help="the run's config (default: found from ckpt)")
    args = p.parse_args(argv[1:])
    n = merge_lora_checkpoint(args.ckpt, args.out, args.config)
    print(f"wrote {n} merged tensors to {args.out}")
