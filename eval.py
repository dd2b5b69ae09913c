"""Evaluate a checkpoint on verification sets: python eval.py ckpt_path=PATH [...]."""

import hydra
from omegaconf import DictConfig

from facerec.run.evaluation import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
