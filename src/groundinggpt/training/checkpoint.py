"""Load model weights from a Lightning checkpoint or a safetensors file (safe loading only)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Model tensors of ``path``: a ``.safetensors`` file or a Lightning ``.ckpt``.

    Lightning checkpoints prefix the model's keys with ``model.`` (the attribute of the
    LightningModule); that prefix is removed so the keys match :class:`GroundingGPT`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt)
    prefix = "model."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load ``path`` into ``model`` and report what did not match.

    Raises:
        KeyError: with ``strict``, when keys are missing or unexpected.
    """
    state = read_state_dict(path)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        msg = (
            f"loading {path}: {len(result.missing_keys)} missing keys "
            f"{result.missing_keys[:5]}, {len(result.unexpected_keys)} unexpected "
            f"{result.unexpected_keys[:5]}"
        )
        if strict:
            raise KeyError(msg)
        log.warning(msg)
    log.info("loaded %d tensors from %s", len(state), path)
