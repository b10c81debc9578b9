"""Entry point of a training job submitted to a Ray cluster:

python -m inspectloop.trainer.job CONFIG_JSON RESULT_JSON
"""

from __future__ import annotations

import sys
from pathlib import Path

import ray

from inspectloop.trainer.ray_loop import TrainingConfig, run_training
from inspectloop.trainer.runner import result_to_json


def main() -> None:
    config_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    config = TrainingConfig.from_json(config_path.read_text(encoding="utf-8"))
    ray.init(address="auto")  # the cluster this job was submitted to
    result = run_training(config)
    result_path.write_text(result_to_json(result), encoding="utf-8")


if __name__ == "__main__":
    main()
