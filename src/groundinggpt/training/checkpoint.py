"""This project's checkpoints: load model weights (Lightning ``.ckpt`` or ``.safetensors``,
strict, LoRA merged) and check resume paths. Files are opened by `groundinggpt.convert.io`
(safe loading only); `groundinggpt.build.build_model` is the one caller that loads weights
into a model for train (``init_from``), eval, infer and the demo (``ckpt_path``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from groundinggpt.convert.io import load_pickle, read_checkpoint
from groundinggpt.training.lora import apply_lora, has_lora_keys, merge_lora

log = logging.getLogger(__name__)


_REMOTE = ("http://", "https://", "s3://", "gs://", "hf://", "ftp://")


def resume_path(path: str | None, allow_remote: bool = False) -> str | None:
    """``ckpt_path`` for ``Trainer.fit``: a local file, or a URL only when explicitly allowed.

    The checkpoint is then loaded with ``weights_only=True`` either way (no pickled code runs).

    Raises:
        ValueError: a remote URL without ``allow_remote``.
        FileNotFoundError: a local path that does not exist.
    """
    if path is None:
        return None
    path = str(path)
    if path.startswith(_REMOTE):
        if not allow_remote:
            raise ValueError(
                f"ckpt_path={path} is remote; download it and pass the local file, or set "
                "allow_remote_checkpoints=true (it is still loaded with weights_only=True)"
            )
        return path
    if path not in ("last", "best", "hpc") and not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(model tensors, extra entries)`` of a ``.safetensors`` file or a Lightning ``.ckpt``."""
    if str(path).startswith(_REMOTE):
        raise ValueError(f"{path}: weights are read from local files only; download it first")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return read_checkpoint(path), {}
    if _looks_like_safetensors(path):
        raise ValueError(
            f"{path} is a safetensors file: name it {path.with_suffix('.safetensors')}"
        )
    ckpt = load_pickle(path)
    if not isinstance(ckpt, dict):
        raise ValueError(
            f"{path}: a checkpoint holds a dict of tensors, not a {type(ckpt).__name__}"
        )
    state = ckpt.get("state_dict", ckpt)
    prefix = "model."
    tensors = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return tensors, {"lora": ckpt.get("lora")} if "state_dict" in ckpt else {}


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte header length and a JSON header (``{``)."""
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 10**8


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Model tensors of ``path``: a ``.safetensors`` file or a Lightning ``.ckpt``.

    Lightning checkpoints prefix the model's keys with ``model.`` (the attribute of the
    LightningModule); that prefix is removed so the keys match :class:`GroundingGPT`.
    """
    return _read(path)[0]


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load ``path`` into ``model`` and report what did not match.

    A checkpoint of a LoRA run (peft key names) is loaded into the same LoRA layers, rebuilt
    from the settings the checkpoint carries, and merged: ``model`` stays a plain model.

    Raises:
        KeyError: with ``strict``, when keys are missing or unexpected.
        ValueError: LoRA weights without the settings to rebuild them.
    """
    state, extra = _read(path)
    if has_lora_keys(state) and not hasattr(model.llm, "peft_config"):
        if not extra.get("lora"):
            raise ValueError(
                f"{path} holds LoRA weights but not their settings (r, alpha, target modules): "
                "it was not saved by this project's training module"
            )
        apply_lora(model, extra["lora"])
        _load(model, state, path, strict)
        merge_lora(model)
        log.info("merged the LoRA weights of %s (%s)", path, extra["lora"])
        return
    _load(model, state, path, strict)


def non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors of ``state`` that hold NaN or inf."""
    return [
        k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def _load(model: nn.Module, state: dict[str, torch.Tensor], path, strict: bool) -> None:
    bad = non_finite(state)
    if bad:
        log.warning(
            "%s: %d of %d tensors hold NaN/inf values (e.g. %s): outputs will be garbage",
            path,
            len(bad),
            len(state),
            bad[:5],
        )
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
