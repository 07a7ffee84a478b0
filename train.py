"""Train GroundingGPT: `python train.py experiment=stage2_fine` (see configs/train.yaml)."""

import hydra
from omegaconf import DictConfig

from groundinggpt.training.train import train


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
