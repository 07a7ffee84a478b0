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
    from groundinggpt.training.train import train

    train(cfg)


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
