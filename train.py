"""Train GroundingGPT: `python train.py experiment=stage2_fine` (see configs/train.yaml)."""

from groundinggpt.cli import train_main as main

if __name__ == "__main__":
    main()
