"""A study run by every rank under torchrun (tests/test_study_distributed.py).

The training group gets a timeout shorter than rank 0's probing of the second run, so the
other rank must wait for it elsewhere (`objbench.harness.ranks`); the first run's probe fails
on rank 0. Each rank writes what it recorded: the study's result and each run's state.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from objbench.harness import study as study_mod
from objbench.harness.registry import TASKS
from objbench.tasks.base import Task, TaskResult

TRAINING_TIMEOUT = timedelta(seconds=10)
PROBE_SECONDS = 15  # longer than TRAINING_TIMEOUT


class Flaky(Task):
    """Fails on seed 0; on other seeds takes PROBE_SECONDS and reports the world size."""

    name = "flaky"
    description = "fails or dawdles on rank 0 (test double)"

    def run(self, model, seed):
        if seed == 0:
            raise RuntimeError(f"probe failed on rank {dist.get_rank()}")
        time.sleep(PROBE_SECONDS)
        result = TaskResult(self.name)
        result.add("world_size", dist.get_world_size(), 1)
        return result


def main(study_file: str, out: str) -> None:
    dist.init_process_group("gloo", timeout=TRAINING_TIMEOUT)
    TASKS.register("flaky", Flaky)
    states = []
    run_one = study_mod.run_one

    def recorded(study, arm, cfg, run_dir, data):
        state, seconds = run_one(study, arm, cfg, run_dir, data)
        states.append({"seed": cfg.seed, "state": state})
        return state, seconds

    study_mod.run_one = recorded
    ok = study_mod.run_study(study_mod.load_study(Path(study_file)), Path(out))
    Path(out, f"rank{dist.get_rank()}.json").write_text(json.dumps({"ok": ok, "runs": states}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
