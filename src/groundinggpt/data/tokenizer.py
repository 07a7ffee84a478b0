"""A small byte-level BPE tokenizer the project builds itself (no model hub needed).

Digits are split into single tokens before BPE so that coordinates such as ``0.417`` tokenise
as ``0 . 4 1 7``: the model then learns one digit at a time instead of thousands of number
pieces. Byte-level BPE keeps every string encodable and decodes back exactly.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"

# Words the embedded synthetic tasks and the conversation template use; BPE merges them into
# whole tokens, anything else still encodes byte by byte.
_CORPUS = """
A chat between a curious human and an artificial intelligence assistant.
The assistant gives helpful, detailed, and polite answers to the human's questions.
USER: ASSISTANT: Where is the red circle? Answer with a bounding box.
When does the green square appear? Which object is making this sound?
Is there a blue triangle in the image? Yes. No. Yes, there is. No, there is not.
Describe the image briefly. Describe the video briefly. Describe the sound briefly.
What shapes are in the image? What happens in the video? What do you hear?
a red circle and a blue square. a yellow triangle appears in the video.
a low-pitched tone. a mid-pitched tone. a high-pitched tone. green yellow red blue
circle square triangle shape object image video sound audio picture frame tone
Please provide the bounding box coordinate of the region this sentence describes:
Please provide the time span of the event this sentence describes:
There is a in the at from to during appears disappears visible
Point out the location of the object that makes the sound.
the a an of and is are there it this that what where when which who how with
"""


def build_tokenizer(
    vocab_size: int = 512, extra_corpus: list[str] | None = None
) -> PreTrainedTokenizerFast:
    """Train the tiny byte-level BPE tokenizer deterministically.

    Args:
        vocab_size: target vocabulary size (the 256 byte symbols included).
        extra_corpus: more text to learn merges from.

    Example:
        >>> tok = build_tokenizer()
        >>> tok.convert_ids_to_tokens(tok("0.417")["input_ids"])
        ['0', '.', '4', '1', '7']
    """
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = _CORPUS.strip().splitlines() + list(extra_corpus or [])
    tokenizer.train_from_iterator(lines, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )


def load_tokenizer(
    pretrained: str | Path | None = None, vocab_size: int = 512
) -> PreTrainedTokenizerFast:
    """Load a Hugging Face tokenizer from a local path/hub id, or build the tiny one.

    Args:
        pretrained: local directory or hub id of an LLM tokenizer (e.g. Vicuna's); ``None``
            builds the project's tiny tokenizer.
        vocab_size: vocabulary size of the tiny tokenizer.
    """
    if pretrained is None:
        return build_tokenizer(vocab_size)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(pretrained), use_fast=True)
    if tok.pad_token is None:
        # Llama tokenizers ship without a pad token; unk is the usual stand-in (LLaVA does this).
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok
