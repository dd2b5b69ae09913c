"""Train a face-recognition model: python train.py [group=option ...] [key=value ...]."""

import hydra
from omegaconf import DictConfig

from facerec.run.multirun import ddp_runs_this_job
from facerec.run.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with ddp_runs_this_job():
        return train(cfg)


if __name__ == "__main__":
    main()
