"""Convert the released GroundingGPT-7B into this project's checkpoint (or merge a LoRA run).

Example:
    python -m groundinggpt.convert --released ckpt/GroundingGPT \\
        --clip ckpt/clip-vit-large-patch14-336 --out ckpt/groundinggpt_7b.safetensors \\
        --adapters-out ckpt/groundinggpt_7b_adapters.safetensors

Writes ``--out`` (every tensor of the model, our keys: loads with ``ckpt_path=`` / ``init_from=``),
optionally ``--adapters-out`` (the adapters only) and ``<out>.json``, a report of where every
released tensor went and why the dropped ones are not used.

``groundinggpt-convert glamm SRC OUT [--clip CLIP]`` converts a released GLaMM
(``MBZUAI/GLaMM-GranD-Pretrained``, ``GLaMM-FullScope``, ...) for ``model=glamm_7b``
(`groundinggpt.convert.glamm`), with the same ``<out>.json`` report.

``groundinggpt-convert merge-lora CKPT --out X.safetensors`` merges a LoRA run's checkpoint
into plain weights (`groundinggpt.cli.convert_main`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from groundinggpt.convert.io import read_checkpoint, save
from groundinggpt.convert.released import (
    adapter_state,
    check_released_config,
    convert_released,
    default_target_token_ids,
    released_token_ids,
)
from groundinggpt.modalities import SPECIAL_TOKENS

log = logging.getLogger("groundinggpt.convert")

DTYPES = {
    "keep": None,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m groundinggpt.convert", description=__doc__.split("\n")[0]
    )
    p.add_argument("--released", required=True, help="released GroundingGPT folder or file")
    p.add_argument("--clip", help="HF CLIP ViT-L/14-336 folder or file (the release lacks it)")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors")
    p.add_argument("--adapters-out", type=Path, help="also write the adapters alone here")
    p.add_argument(
        "--tokenizer", help="our tokenizer (e.g. Vicuna's folder) to take token ids from"
    )
    p.add_argument("--dtype", choices=sorted(DTYPES), default="keep")
    p.add_argument("--vit-depth", type=int, default=39)
    return p.parse_args(argv)


def target_token_ids(tokenizer_path: str | None, vocab: int) -> dict[str, int]:
    """Ids our tokenizer gives the nine tokens (the same call `build_grounding_model` makes)."""
    if tokenizer_path is None:
        return default_target_token_ids(vocab)
    from groundinggpt.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_path)
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    if len(tok) != vocab:
        raise ValueError(f"tokenizer has {len(tok)} tokens with ours, the release {vocab} rows")
    return dict(zip(SPECIAL_TOKENS, tok.convert_tokens_to_ids(SPECIAL_TOKENS), strict=True))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["glamm"]:
        return glamm_main(argv[1:])
    args = parse_args(argv)
    if args.clip is None:
        log.warning("no --clip: the output lacks the image encoder and loads only non-strictly")
    for line in check_released_config(args.released):
        log.warning("config.json differs from the architecture we build: %s", line)
    released = read_checkpoint(args.released)
    clip = read_checkpoint(args.clip) if args.clip else None
    vocab = released["lm_head.weight"].shape[0]
    source_ids = released_token_ids(args.released, vocab)
    target_ids = target_token_ids(args.tokenizer, vocab)
    conv = convert_released(released, clip, source_ids, target_ids, args.vit_depth)
    conv.check_complete(args.released)
    dtype = DTYPES[args.dtype]
    state = {
        k: v.to(dtype) if dtype and v.is_floating_point() else v for k, v in conv.state.items()
    }
    meta = {"converted_from": str(args.released), "special_token_ids": json.dumps(target_ids)}
    save(state, args.out, meta)
    if args.adapters_out:
        save(adapter_state(state), args.adapters_out, meta)
    report = {"summary": conv.summary(), "sources": conv.sources, "dropped": conv.dropped}
    report_path = args.out.with_suffix(".json")
    report_path.write_text(json.dumps(report, indent=1))
    print(f"{conv.summary()}\nwrote {args.out} (report: {report_path})")


def parse_glamm_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="groundinggpt-convert glamm",
        description="Convert a released GLaMM checkpoint for model=glamm_7b.",
    )
    p.add_argument("src", help="released GLaMM folder (HF shards) or file")
    p.add_argument("out", type=Path, help="output .safetensors")
    p.add_argument(
        "--clip", help="HF CLIP ViT-L/14-336 folder or file (GLaMM's release leaves it out)"
    )
    p.add_argument(
        "--tokenizer", help="our tokenizer (e.g. Vicuna's folder) to take token ids from"
    )
    p.add_argument(
        "--no-region-encoder",
        action="store_true",
        help="the target model has no region encoder: drop GLaMM's (and its <bbox> row)",
    )
    p.add_argument("--dtype", choices=sorted(DTYPES), default="keep")
    return p.parse_args(argv)


def glamm_target_ids(tokenizer_path: str | None, base: int, region: bool) -> dict[str, int]:
    """Ids our tokenizer gives the tokens `build_grounding_model` adds to ``model=glamm_7b``."""
    from groundinggpt.convert.glamm import default_target_token_ids, target_tokens

    if tokenizer_path is None:
        return default_target_token_ids(base, region)
    from groundinggpt.data.tokenizer import load_tokenizer
    from groundinggpt.modalities import PIXEL_TOKENS, REGION_TOKEN

    tok = load_tokenizer(tokenizer_path)
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tok.add_tokens([*PIXEL_TOKENS, *([REGION_TOKEN] if region else [])], special_tokens=False)
    tokens = target_tokens(region)
    return dict(zip(tokens, tok.convert_tokens_to_ids(tokens), strict=True))


def glamm_main(argv: list[str]) -> None:
    """``groundinggpt-convert glamm SRC OUT``: a released GLaMM -> ``model=glamm_7b`` weights."""
    from groundinggpt.convert.glamm import (
        check_glamm_config,
        convert_glamm,
        glamm_token_ids,
        our_token_ids,
        token_row_report,
    )

    args = parse_glamm_args(argv)
    if args.clip is None:
        log.warning(
            "no --clip: unless SRC holds the CLIP tower, the output loads only non-strictly"
        )
    for line in check_glamm_config(args.src):
        log.warning("config.json differs from the architecture we build: %s", line)
    state = read_checkpoint(args.src)
    clip = read_checkpoint(args.clip) if args.clip else None
    region = not args.no_region_encoder
    source_ids = glamm_token_ids(args.src, state["lm_head.weight"].shape[0])
    target_ids = glamm_target_ids(args.tokenizer, min(source_ids.values()), region)
    conv = convert_glamm(state, clip, source_ids, target_ids, region)
    conv.check_complete(args.src)
    dtype = DTYPES[args.dtype]
    out = {k: v.to(dtype) if dtype and v.is_floating_point() else v for k, v in conv.state.items()}
    meta = {"converted_from": str(args.src), "special_token_ids": json.dumps(target_ids)}
    save(out, args.out, meta)
    report = {
        "summary": conv.summary(),
        "sources": conv.sources,
        "dropped": conv.dropped,
        "token_rows": token_row_report(our_token_ids(source_ids), target_ids),
    }
    report_path = args.out.with_suffix(".json")
    report_path.write_text(json.dumps(report, indent=1))
    print(f"{conv.summary()}\nwrote {args.out} (report: {report_path})")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
