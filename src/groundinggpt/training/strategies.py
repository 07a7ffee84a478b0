"""Helpers that let strategy configs name layer classes by import path."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.utils import get_class


def module_wrap_policy(layer_classes: Sequence[str]):
    """An FSDP ``ModuleWrapPolicy`` over the given classes, e.g. the LLM's decoder layer.

    Args:
        layer_classes: import paths such as
            ``transformers.models.llama.modeling_llama.LlamaDecoderLayer``.

    Example:
        >>> module_wrap_policy(["torch.nn.TransformerEncoderLayer"])  # doctest: +ELLIPSIS
        <torch.distributed.fsdp.wrap.ModuleWrapPolicy object at ...>
    """
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return ModuleWrapPolicy({get_class(path) for path in layer_classes})
