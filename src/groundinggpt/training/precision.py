"""What is stored in which dtype: fp32 master weights, bf16 compute, bf16 frozen encoders.

The rule, for every strategy:

- parameters the optimizer updates are fp32 ("master weights"): an AdamW step of lr 2e-5 on a
  bf16 weight of magnitude ~1 rounds to no change at all (bf16 keeps 8 significant bits), so a
  run whose trainable weights are bf16 would silently not train;
- the matmuls run in bf16 through autocast (``trainer.precision=bf16-mixed``), or through
  FSDP ``MixedPrecision`` (fp32 sharded parameters, bf16 copies gathered for compute), or
  DeepSpeed's own bf16 mode (bf16 module, fp32 master copy in the ZeRO optimizer);
- frozen encoders take no optimizer state and may be stored in bf16 to halve their memory
  (``module.frozen_dtype``).

``trainer.precision=bf16-true`` would store the trainable weights in bf16 and is refused.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def keep_trainable_fp32(model: nn.Module) -> int:
    """Cast every trainable parameter to fp32 in place (e.g. an LLM loaded in bf16).

    Returns:
        how many parameters were cast.
    """
    cast = 0
    for p in model.parameters():
        if p.requires_grad and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()
            cast += 1
    if cast:
        log.info("cast %d trainable parameters to fp32 master weights", cast)
    return cast


def resolve_frozen_dtype(setting: str | None, trainer) -> torch.dtype | None:
    """The dtype frozen encoders are stored in, for ``module.frozen_dtype`` and a trainer.

    ``"auto"`` gives bfloat16 when the trainer computes in bf16 and the strategy is not FSDP
    (an FSDP unit flattens its parameters into one tensor of one dtype), otherwise None.
    """
    if setting is None:
        return None
    if setting != "auto":
        if setting not in _DTYPES:
            raise ValueError(f"frozen_dtype={setting!r} is not one of auto, {sorted(_DTYPES)}")
        return _DTYPES[setting]
    if trainer is None or "bf16" not in str(trainer.precision):
        return None
    from lightning.pytorch.strategies import FSDPStrategy

    return None if isinstance(trainer.strategy, FSDPStrategy) else torch.bfloat16


def cast_frozen_encoders(model: nn.Module, dtype: torch.dtype) -> list[str]:
    """Store every branch encoder that has no trainable parameter in ``dtype``."""
    cast = []
    for name, branch in model.branches.items():
        if not any(p.requires_grad for p in branch.encoder.parameters()):
            branch.encoder.to(dtype)
            cast.append(name)
    if cast:
        log.info("frozen encoders %s stored in %s", cast, dtype)
    return cast


def check_master_weights(params: list[torch.Tensor], trainer=None) -> None:
    """Refuse to build an optimizer over non-fp32 parameters (their updates would round away).

    DeepSpeed keeps its own fp32 master copy, so its engine's bf16 module is fine.
    """
    low = sorted({str(p.dtype) for p in params if p.dtype != torch.float32})
    if not low:
        return
    from lightning.pytorch.strategies import DeepSpeedStrategy

    if trainer is not None and isinstance(trainer.strategy, DeepSpeedStrategy):
        return
    precision = getattr(trainer, "precision", "?")
    raise ValueError(
        f"trainable parameters are stored in {low} (trainer.precision={precision}): AdamW "
        "updates of lr ~2e-5 round to nothing in 16-bit weights. Keep fp32 master weights "
        "with trainer.precision=bf16-mixed (autocast / FSDP MixedPrecision) or DeepSpeed bf16."
    )
