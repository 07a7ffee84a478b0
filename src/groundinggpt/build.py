"""The composition root: a Hydra config in, a ready model, tokenizer and data module out.

``train.py``, ``eval.py``, ``infer.py``, the demo, ``groundinggpt-convert merge-lora`` and the
notebook build through here, so every entry point gets the same model the same way:

1. the tokenizer (``cfg.tokenizer``);
2. the model (``cfg.model``): branches, the LLM, the modality tokens added to tokenizer and
   embeddings (their row ids kept in ``model.modality_token_ids``), and the tokens per media
   item derived from each encoder and adapter (``model.media_tokens``);
3. the weights of a checkpoint, when asked: the only door weights enter a built model
   through (`groundinggpt.training.checkpoint.load_weights`: Lightning ``.ckpt`` or
   ``.safetensors``, strict, LoRA merged): ``init_from`` for training (the previous stage;
   resuming a run is the Trainer's ``ckpt_path``), ``ckpt_path`` for eval, infer and the demo;
4. the data module, which formats prompts for exactly those ``media_tokens``.

Example:
    >>> model, tokenizer = build_model(cfg, "ckpt_path")  # eval.py; train.py: "init_from"
    >>> datamodule = build_datamodule(cfg.data, model, tokenizer)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from groundinggpt.models.grounding_model import GroundingGPT
from groundinggpt.training.checkpoint import load_weights


def build_model(cfg: DictConfig, weights: str | None = None) -> tuple[GroundingGPT, Any]:
    """The model and tokenizer ``cfg`` describes; with ``weights``, the checkpoint it names.

    Args:
        cfg: a composed config with ``tokenizer`` and ``model`` groups.
        weights: the config key holding the checkpoint to load: ``"ckpt_path"`` for eval.py,
            infer.py and the demo (required), ``"init_from"`` for training (a null value
            keeps the initial weights). None: the initial weights.

    Missing or unexpected keys fail, so a checkpoint of another architecture never runs
    silently with random layers.
    """
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    model = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer, _convert_="partial")
    if weights is not None:
        path = cfg.get(weights)
        if path is None and weights != "init_from":
            raise ValueError(f"{weights}=... is required: the checkpoint to load")
        if path is not None:
            load_weights(model, path)
    return model, tokenizer


def build_datamodule(data_cfg: DictConfig, model: GroundingGPT, tokenizer, **kwargs: Any):
    """The data module of ``data_cfg`` (training or benchmark) for ``model``'s media tokens."""
    return hydra.utils.instantiate(
        data_cfg, tokenizer=tokenizer, media_tokens=model.media_tokens, _convert_="all", **kwargs
    )


def find_run_config(ckpt: Path) -> Path:
    """``.hydra/config.yaml`` of the run that wrote ``ckpt`` (its folder or a parent)."""
    for folder in [ckpt.parent, *ckpt.parents]:
        candidate = folder / ".hydra" / "config.yaml"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no .hydra/config.yaml above {ckpt}: pass --config")


def merge_lora_checkpoint(ckpt: Path, out: Path, config: Path | None = None) -> int:
    """Write ``ckpt``'s model, LoRA merged, to ``out``; returns the number of tensors."""
    from groundinggpt.convert.io import save

    cfg = OmegaConf.load(config or find_run_config(ckpt))
    cfg.ckpt_path = str(ckpt)
    model, _ = build_model(cfg, "ckpt_path")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save(state, out, {"merged_from": str(ckpt)})
    return len(state)
