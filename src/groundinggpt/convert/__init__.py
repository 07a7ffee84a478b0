"""Checkpoint conversion: released GroundingGPT and component checkpoints -> this project.

- `io`: safe reading of single files and sharded folders (safetensors or ``weights_only``).
- `mapping`: rule-based key conversion that accounts for every source tensor.
- `components`: key rules for LAVIS Q-Former / EVA, HF BLIP-2, ImageBind audio, CLIP.
- `released`: the released GroundingGPT-7B ("LEGO") checkpoint.
- `glamm`: a released GLaMM checkpoint (LLM, CLIP + projector, SAM original -> HF names,
  ``text_hidden_fcs``, region encoder, token rows) onto ``model=glamm_7b``.

Command line: ``python -m groundinggpt.convert --help``.
"""
