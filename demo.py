"""Serve a checkpoint as a web page: `python demo.py ckpt_path=CKPT` (http://127.0.0.1:7860).

Upload an image, a video and/or a sound, ask in a multi-turn chat, see the boxes and spans
drawn (see configs/demo.yaml; needs the `demo` extra: `pip install -e ".[demo]"`).
"""

from groundinggpt.cli import demo_main as main

if __name__ == "__main__":
    main()
