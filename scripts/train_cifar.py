"""Train the CIFAR-10 VGG19 (width 0.25, batch norm folded afterwards) and export an hbjax checkpoint.

    python scripts/train_cifar.py                       # the shipped model's recipe
    python scripts/train_cifar.py epochs=2 limit_per_class=100 out_dir=runs/smoke

Interrupt and run the same command again to resume from the last finished epoch.
"""

from __future__ import annotations

import dataclasses
import json
import os

import hydra
from omegaconf import DictConfig, OmegaConf

import hbjax
from hbjax.train import TrainConfig, train


@hydra.main(config_path="../conf", config_name="train_cifar", version_base="1.3")
def main(cfg: DictConfig) -> None:
    values = OmegaConf.to_container(cfg, resolve=True)
    export_path = values.pop("export_path")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SystemExit(f"unknown training option(s): {unknown}")
    config = TrainConfig(**values)
    model, summary = train(config)
    hbjax.models.save(model, export_path)
    with open(os.path.join(config.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("history", "config")}))
    print(f"wrote {export_path}")


if __name__ == "__main__":
    main()
