"""One conversation template for training and inference, placeholder expansion and label masking.

The original GroundingGPT trains with one template and infers with another; here a single
:class:`ConversationFormatter` renders both, so the prompt a model sees at test time is
token-for-token the prefix it was trained on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from groundinggpt.modalities import REGION_TOKEN, SEG_TOKEN, ModalitySpec

IGNORE_INDEX = -100


class ConversationFormatter:
    """Render and tokenise ``[{"from": "human"|"gpt", "value": str}, ...]`` conversations.

    Template (Vicuna v1 style)::

        <s>{system} USER: {human} ASSISTANT: {gpt}</s>USER: {human} ASSISTANT: {gpt}</s>

    Segments are tokenised one by one and concatenated, so answer tokens (and the ``</s>``
    closing each answer) are exactly the positions with labels; everything else is
    ``IGNORE_INDEX``.

    Args:
        tokenizer: a Hugging Face tokenizer that already contains :data:`SPECIAL_TOKENS`.
        specs: modality specs from :func:`modality_specs`.
        system: the system prompt; empty for the tiny default to keep sequences short.
        media_after_text: move the media blocks of a human turn after its text (the records
            put ``<image>`` first). In a causal LLM the media tokens then see the question, so
            each can match itself against it (as InstructBLIP's instruction-aware Q-Former).

    Example:
        >>> fmt = ConversationFormatter(tok, modality_specs({"image": 4}))
        >>> ids, labels = fmt.encode([{"from": "human", "value": "<image>\\nWhere?"},
        ...                           {"from": "gpt", "value": "[0.1, 0.2, 0.3, 0.4]"}])
    """

    def __init__(
        self,
        tokenizer,
        specs: Mapping[str, ModalitySpec],
        system: str = "",
        media_after_text: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.specs = dict(specs)
        self.system = system
        self.media_after_text = media_after_text
        self._placeholder_re = re.compile(
            "(" + "|".join(re.escape(s.placeholder) for s in self.specs.values()) + ")"
        )
        # The ids of [SEG] / <region> when the tokenizer has them (a model with a pixel
        # decoder / region encoder), else None; read once here, not per dataset.
        vocab = tokenizer.get_vocab()
        self.seg_token_id = vocab.get(SEG_TOKEN)
        self.region_token_id = vocab.get(REGION_TOKEN)
        self._expansion = {}
        for spec in self.specs.values():
            ids = tokenizer.convert_tokens_to_ids([spec.start, spec.patch, spec.end])
            if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
                raise ValueError(f"tokenizer lacks the special tokens of {spec.placeholder}")
            start, patch, end = ids
            self._expansion[spec.placeholder] = [start] + [patch] * spec.num_tokens + [end]

    @property
    def media_end_ids(self) -> set[int]:
        """Ids of the tokens that close a modality's block (``<im_end>``...)."""
        return {expansion[-1] for expansion in self._expansion.values()}

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def encode_text(self, text: str) -> list[int]:
        """Token ids of ``text`` with every placeholder expanded to start + N patch + end.

        With ``media_after_text`` the expanded blocks follow the text, in their order.
        """
        pieces = self._placeholder_re.split(text)
        if self.media_after_text:
            media = [p for p in pieces if p in self._expansion]
            words = "".join(p for p in pieces if p not in self._expansion).strip()
            pieces = [words + " " if media and words else words, *media]
        ids: list[int] = []
        for piece in pieces:
            ids += self._expansion.get(piece) or self._text_ids(piece)
        return ids

    def _human_prefix(self, turn: int) -> str:
        if turn == 0:
            return f"{self.system} USER: " if self.system else "USER: "
        return "USER: "

    def encode(
        self, conversations: Sequence[Mapping[str, str]], generation_prompt: bool = False
    ) -> tuple[list[int], list[int]]:
        """Return ``(input_ids, labels)`` for a whole conversation.

        With ``generation_prompt=True`` the conversation must end on a human turn and the ids
        end with ``ASSISTANT:`` so that generation continues with the answer.
        """
        ids = [self.tokenizer.bos_token_id]
        labels = [IGNORE_INDEX]
        for i, msg in enumerate(conversations):
            role = msg["from"]
            if role == "human" and i % 2 == 0:
                seg = self._text_ids(self._human_prefix(i // 2))
                seg += self.encode_text(msg["value"]) + self._text_ids(" ASSISTANT:")
                ids += seg
                labels += [IGNORE_INDEX] * len(seg)
            elif role == "gpt" and i % 2 == 1:
                seg = self._text_ids(" " + msg["value"].strip()) + [self.tokenizer.eos_token_id]
                ids += seg
                labels += seg
            else:
                raise ValueError(f"turn {i} is from {role!r}; turns must alternate human, gpt")
        if generation_prompt and len(conversations) % 2 == 0:
            raise ValueError("a generation prompt must end on a human turn")
        return ids, labels

    def prompt_ids(self, conversations: Sequence[Mapping[str, str]]) -> list[int]:
        """Ids of the conversation up to (and including) the last human turn's ``ASSISTANT:``."""
        turns = list(conversations)
        if turns and turns[-1]["from"] == "gpt":
            turns = turns[:-1]
        return self.encode(turns, generation_prompt=True)[0]


def count_placeholders(conversations: Sequence[Mapping[str, str]], placeholder: str) -> int:
    return sum(msg["value"].count(placeholder) for msg in conversations)


def pad_sequences(seqs: Sequence[Sequence[int]], value: int, left: bool = False) -> torch.Tensor:
    """Pad int sequences to a (B, T) tensor, on the right (training) or left (generation)."""
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        t = torch.as_tensor(list(s), dtype=torch.long)
        if left:
            out[i, width - len(s) :] = t
        else:
            out[i, : len(s)] = t
    return out
