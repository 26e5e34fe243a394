"""Checkpoints in safetensors (never pickle): weights, optimizer state and the run's counters.

A checkpoint is a folder written under a temporary name and renamed when complete, so an
interrupted save never leaves a half-checkpoint that looks valid.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from objbench.harness.errors import CheckpointError


def save(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         state: dict[str, Any]) -> Path:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              str(tmp / "model.safetensors"))
    opt = optimizer.state_dict()
    tensors = {f"{i}.{name}": t.contiguous().cpu() for i, s in opt["state"].items()
               for name, t in s.items()}
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "param_groups": opt["param_groups"]}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def load_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {folder} is unreadable ({exc}); delete it to start "
                              f"over from the previous one") from None


def load_model(folder: Path, model: torch.nn.Module) -> None:
    path = folder / "model.safetensors"
    if not path.exists():
        raise CheckpointError(f"{path} is missing: not an objbench checkpoint")
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit the configured model: {exc}") from None


def load_optimizer(folder: Path, optimizer: torch.optim.Optimizer) -> None:
    tensors = load_file(str(folder / "optimizer.safetensors"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = t
    optimizer.load_state_dict({"state": state, "param_groups": load_state(folder)["param_groups"]})


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = run_dir / "checkpoints"
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.endswith(".tmp") and (p / "state.json").exists())
