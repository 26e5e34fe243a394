"""Checkpoints in safetensors (never pickle): weights, optimizer state and the run's counters.

The weights file holds the encoder's tensors under their own names and the objective's own
modules (ELECTRA's generator and head) under ``objective.``, so a checkpoint of an objective
without modules is exactly an encoder's state dict.

A checkpoint is a folder written under a temporary name and renamed when complete, so an
interrupted save never leaves a half-checkpoint that looks valid. Its ``manifest.json``
records the sha256 and size of every file in it, and every load checks the files it reads
against it: a flipped byte, a truncated or a missing file raises `DamagedCheckpoint` naming
the file, never a silently wrong model.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from objbench.harness.config import config_diff, result_settings
from objbench.harness.errors import CheckpointError, DamagedCheckpoint
from objbench.harness.integrity import Manifest, mismatches, record

MANIFEST = "manifest.json"
MODEL, OPTIMIZER, STATE = "model.safetensors", "optimizer.safetensors", "state.json"
MODULES_PREFIX = "objective."  # weights of the objective's own modules


def save(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         state: dict[str, Any], modules: torch.nn.Module | None = None) -> Path:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {**model.state_dict(), **{MODULES_PREFIX + k: v for k, v in
                                        (modules.state_dict() if modules is not None else {}).items()}}
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / MODEL))
    opt = optimizer.state_dict()
    tensors = {f"{i}.{name}": t.contiguous().cpu() for i, s in opt["state"].items()
               for name, t in s.items()}
    save_file(tensors, str(tmp / OPTIMIZER))
    (tmp / STATE).write_text(json.dumps({**state, "param_groups": opt["param_groups"]}))
    files = record(tmp, [tmp / MODEL, tmp / OPTIMIZER, tmp / STATE])
    (tmp / MANIFEST).write_text(json.dumps({"files": files}, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def verify(folder: Path, names: tuple[str, ...] = (MODEL, OPTIMIZER, STATE)) -> None:
    """Check the named files of a checkpoint against its manifest; raise if any differs."""
    manifest = _manifest(folder)
    unlisted = [n for n in names if n not in manifest]
    problems = [f"{n} is not in its {MANIFEST}" for n in unlisted]
    problems += mismatches(folder, {n: manifest[n] for n in names if n in manifest})
    if problems:
        raise DamagedCheckpoint(f"checkpoint {folder} is damaged: {'; '.join(problems)}")


def _manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    if not path.exists():
        if _is_legacy(folder):
            raise CheckpointError(
                f"checkpoint {folder} was written by an objbench that did not record checksums "
                f"({MANIFEST}), so its files cannot be verified; delete {folder.parent} (or use a "
                f"fresh output folder) and train again")
        raise DamagedCheckpoint(f"checkpoint {folder} is damaged: {MANIFEST} is missing")
    try:
        return json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedCheckpoint(f"checkpoint {folder} is damaged: {MANIFEST} is unreadable "
                                f"({type(exc).__name__}: {exc})") from None


def _is_legacy(folder: Path) -> bool:
    """A readable state.json without the resolved config: written before manifests existed."""
    try:
        return "config" not in json.loads((folder / STATE).read_text())
    except (OSError, ValueError):
        return False


def load_state(folder: Path) -> dict[str, Any]:
    verify(folder, (STATE,))
    return json.loads((folder / STATE).read_text())


def check_config(folder: Path, state: dict[str, Any], config: dict[str, Any], tokenizer_hash: str,
                 label: str, fix: str) -> None:
    """Refuse a checkpoint trained with another config or tokenizer, saying what differs.

    ``label`` names where ``config`` came from ("this run", "config.yaml"); ``fix`` says what to do.
    Settings that never change results (`RESULT_NEUTRAL`: threads, device, ...) may differ.
    """
    differences = config_diff(result_settings(state["config"]), result_settings(config), "checkpoint",
                              label)
    if state.get("tokenizer_hash") != tokenizer_hash:
        differences.append(f"tokenizer sha256: checkpoint {state.get('tokenizer_hash')}..., "
                           f"{label} {tokenizer_hash}...")
    if differences:
        raise CheckpointError(f"{folder} was trained with other settings than {label}: "
                              f"{'; '.join(differences)}; {fix}")


def restore(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
            check: Callable[[dict[str, Any]], None] = lambda state: None,
            modules: torch.nn.Module | None = None) -> dict[str, Any]:
    """Load a checkpoint into ``model`` and the objective's ``modules`` (and ``optimizer``, to
    resume training); return its state.

    Every file needed is verified and ``check(state)`` passes (e.g. the config matches) before
    anything is loaded, so a damaged or mismatched checkpoint leaves both untouched.
    """
    verify(folder, (MODEL, STATE) if optimizer is None else (MODEL, OPTIMIZER, STATE))
    state = json.loads((folder / STATE).read_text())
    check(state)
    _read_model(folder, model, modules if modules is not None else torch.nn.ModuleDict())
    if optimizer is not None:
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, t in load_file(str(folder / OPTIMIZER)).items():
            i, name = key.split(".", 1)
            per_param.setdefault(int(i), {})[name] = t
        optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    return state


def restore_encoder(folder: Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load only the encoder's weights of a verified checkpoint (continued pre-training: the
    objective's own modules and the optimizer state belong to the parent's objective); return
    its state."""
    verify(folder, (MODEL, STATE))
    weights = load_file(str(folder / MODEL))
    try:
        model.load_state_dict({k: v for k, v in weights.items() if not k.startswith(MODULES_PREFIX)})
    except RuntimeError as exc:
        raise CheckpointError(f"{folder / MODEL} does not fit the configured model: {exc}") from None
    return json.loads((folder / STATE).read_text())


def for_reader(exc: DamagedCheckpoint, run_dir: Path, asked: bool) -> DamagedCheckpoint:
    """``exc`` told to someone reading a run (probes): which checkpoint it was and what to do.
    Readers never fall back to another checkpoint: results must come from the one meant."""
    if asked:
        return DamagedCheckpoint(f"{exc} (the checkpoint asked for; no other is read in its place): "
                                 f"train the run again (for a study run: delete {run_dir} and rerun "
                                 f"the study)")
    intact = newest_intact(run_dir)
    return DamagedCheckpoint(
        f"{exc} (the run's newest checkpoint; no other is read in its place): rerun the run's "
        f"`objbench train` command to redo it from {intact.name if intact else 'step 0'}, the newest "
        f"intact checkpoint (for a study run: delete {run_dir / 'status.json'} and rerun the study)")


def _read_model(folder: Path, model: torch.nn.Module, modules: torch.nn.Module) -> None:
    weights = load_file(str(folder / MODEL))
    own = {k[len(MODULES_PREFIX):]: v for k, v in weights.items() if k.startswith(MODULES_PREFIX)}
    try:
        model.load_state_dict({k: v for k, v in weights.items() if not k.startswith(MODULES_PREFIX)})
        modules.load_state_dict(own)
    except RuntimeError as exc:
        raise CheckpointError(f"{folder / MODEL} does not fit the configured model: {exc}") from None


def newest_intact(run_dir: Path) -> Path | None:
    """The newest checkpoint of a run whose files all match its manifest, if any."""
    for folder in reversed(checkpoints(run_dir)):
        try:
            verify(folder)
            return folder
        except CheckpointError:
            continue
    return None


def checkpoints(run_dir: Path) -> list[Path]:
    """A run's checkpoint folders (complete ones: saves are renamed into place), oldest first."""
    root = run_dir / "checkpoints"
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and p.name.startswith("step-") and not p.name.endswith(".tmp"))
