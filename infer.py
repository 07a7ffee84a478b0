"""Ask a checkpoint a question: `python infer.py ckpt_path=CKPT prompt=... image=...`.

Prints the answer with its boxes (pixels) and spans (seconds) and saves a picture into the run
dir; `chat=true` keeps a multi-turn conversation (see configs/infer.yaml).
"""

import hydra
from omegaconf import DictConfig

from groundinggpt.evaluation.inference import infer


@hydra.main(version_base="1.3", config_path="configs", config_name="infer")
def main(cfg: DictConfig) -> None:
    infer(cfg)


if __name__ == "__main__":
    main()
