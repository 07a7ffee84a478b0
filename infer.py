"""Ask a checkpoint a question: `python infer.py ckpt_path=CKPT prompt=... image=...`.

Prints the answer with its boxes (pixels) and spans (seconds) and saves a picture into the run
dir; `chat=true` keeps a multi-turn conversation (see configs/infer.yaml).
"""

from groundinggpt.cli import infer_main as main

if __name__ == "__main__":
    main()
