from __future__ import annotations

import pytest

from groundinggpt.data.conversation import IGNORE_INDEX, ConversationFormatter, pad_sequences
from groundinggpt.modalities import SPECIAL_TOKENS, modality_specs

CONV = [
    {"from": "human", "value": "<image>\nWhere is the red circle?"},
    {"from": "gpt", "value": "[0.100, 0.200, 0.300, 0.400]"},
    {"from": "human", "value": "Is there a blue square?"},
    {"from": "gpt", "value": "No."},
]


@pytest.fixture(scope="module")
def fmt():
    from groundinggpt.data.tokenizer import build_tokenizer

    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    return ConversationFormatter(tok, modality_specs({"image": 5, "video": 3, "audio": 2}))


def test_digits_are_single_tokens(fmt):
    tokens = fmt.tokenizer.convert_ids_to_tokens(fmt.tokenizer("0.417, 1.0")["input_ids"])
    assert [t for t in tokens if t.strip("Ġ").isdigit()] == ["0", "4", "1", "7", "1", "0"]


def test_placeholder_expands_to_start_patches_end(fmt):
    tok = fmt.tokenizer
    ids = fmt.encode_text("<image>\nhi <sound>")
    start, patch, end = tok.convert_tokens_to_ids(["<im_start>", "<im_patch>", "<im_end>"])
    assert ids[:7] == [start] + [patch] * 5 + [end]
    assert ids.count(tok.convert_tokens_to_ids("<so_patch>")) == 2
    assert tok.convert_tokens_to_ids("<vi_patch>") not in ids


def test_only_answers_and_their_eos_are_labelled(fmt):
    tok = fmt.tokenizer
    ids, labels = fmt.encode(CONV)
    assert len(ids) == len(labels)
    learned = [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    expected = (
        tok(" [0.100, 0.200, 0.300, 0.400]", add_special_tokens=False)["input_ids"]
        + [tok.eos_token_id]
        + tok(" No.", add_special_tokens=False)["input_ids"]
        + [tok.eos_token_id]
    )
    assert learned == expected
    # every labelled position carries its own token (labels are not shifted here; the LLM shifts)
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(ids, labels, strict=True))
    assert tok.decode(learned, skip_special_tokens=True) == " [0.100, 0.200, 0.300, 0.400] No."


def test_generation_prompt_is_the_training_prefix(fmt):
    ids, _ = fmt.encode(CONV)
    prompt = fmt.prompt_ids(CONV[:2])
    assert ids[: len(prompt)] == prompt
    assert fmt.tokenizer.decode(prompt).endswith("ASSISTANT:")


def test_turns_must_alternate(fmt):
    with pytest.raises(ValueError, match="alternate"):
        fmt.encode([CONV[0], CONV[2]])


def test_unknown_modality_rejected():
    with pytest.raises(ValueError, match="unknown modalities"):
        modality_specs({"depth": 4})


def test_pad_sequences_left_and_right():
    right = pad_sequences([[1, 2, 3], [4]], 0)
    left = pad_sequences([[1, 2, 3], [4]], 0, left=True)
    assert right.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert left.tolist() == [[1, 2, 3], [0, 0, 4]]


def test_media_after_text_moves_the_blocks_behind_the_question(fmt) -> None:
    first = fmt
    last = ConversationFormatter(fmt.tokenizer, fmt.specs, media_after_text=True)
    text = "<image>\n<sound>\nWhere is it?"
    image, sound = first.encode_text("<image>"), first.encode_text("<sound>")
    words = first.encode_text("Where is it? ")
    assert last.encode_text(text) == words + image + sound
    assert first.encode_text(text)[: len(image)] == image
    assert last.encode_text("no media here") == first.encode_text("no media here")
