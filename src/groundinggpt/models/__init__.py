"""Models: plain ``nn.Module``s, no Lightning.

``encoders`` (frozen CLIP / BLIP-2 video / ImageBind audio encoders), ``imagebind_audio``,
``adapters`` (trainable per-modality adapters), ``llm`` and ``grounding_model``. Import the
submodules directly; this package imports nothing heavy on purpose.
"""
