"""The one training loop every objective runs unchanged.

The objective shapes the batch and computes its summed loss (by default the LM head only
where a target exists); the loop divides it by the step's normaliser (by default the number
of targets), optimizes the encoder and the objective's own modules, and counts what the step
cost on every budget axis (clean tokens, input tokens, predicted positions, FLOPs).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn

from objbench.harness import checkpoint as ckpt
from objbench.harness.blocks import SeenBlocks, batch_rows
from objbench.harness.config import WSD_COOLDOWN, ModelConfig, RunConfig, TrainConfig, validate
from objbench.harness.data import PreparedData, prepare_data
from objbench.harness.errors import (
    CheckpointError,
    ConfigError,
    DamagedCheckpoint,
    Interrupted,
    TrainingDiverged,
    warn,
)
from objbench.harness.model import Encoder
from objbench.harness.progress import progress_bar
from objbench.harness.registry import OBJECTIVES
from objbench.harness.tokenizer import config_vocab
from objbench.harness.tracking import MetricSink, check_trackers, open_trackers
from objbench.objectives.base import Objective, ObjectiveBatch, Options, Part, Vocab
from objbench.objectives.draws import RowGenerator

VAL_SEED = 1234  # validation masks are the same for every seed and arm: paired comparisons


@dataclass
class Counters:
    step: int = 0
    tokens: int = 0  # clean corpus tokens consumed (the data budget)
    input_tokens: int = 0  # non-padding positions the encoder processed
    targets: int = 0  # positions that carried a loss
    flops: float = 0.0  # model FLOPs, forward + backward

    def on(self, axis: str) -> float:
        """Budget consumed on ``axis`` (one of ``BUDGET_AXES``)."""
        return float(self.step if axis == "steps" else getattr(self, axis))


def build_objective(cfg: RunConfig, vocab: Vocab) -> Objective:
    cls = OBJECTIVES.get(cfg.objective)
    options = objective_options(cls, cfg)
    missing = [s for s in cls.specials_needed(options) if s not in vocab.specials]
    if missing:
        raise ConfigError(f"objective {cfg.objective!r} needs the special tokens {missing}: add them "
                          f"to data.special_tokens (now {cfg.data.special_tokens})")
    return cls(options, vocab)


def resolve(cfg: RunConfig) -> RunConfig:
    """The config with the objective's option defaults filled in: what the hash covers."""
    options = objective_options(OBJECTIVES.get(cfg.objective), cfg)
    return cfg.model_copy(update={"options": options.model_dump(mode="json")})


_validated: dict[tuple[type, str], Options] = {}  # (objective class, options as JSON) -> options


def objective_options(cls: type[Objective], cfg: RunConfig) -> Options:
    """``cfg.options`` validated by the objective once per process: a study validates every
    arm before any work, and its runs, their trainers and their readers reuse that result
    (the options with defaults filled in map to the same instance)."""
    key = (cls, json.dumps(cfg.options, sort_keys=True))
    if key not in _validated:
        options = validate(cls.Options, cfg.options, where=f"options of objective {cfg.objective!r}")
        resolved = (cls, json.dumps(options.model_dump(mode="json"), sort_keys=True))
        _validated[key] = _validated[resolved] = options
    return _validated[key]


def checked(cfg: RunConfig) -> RunConfig:
    """``resolve(cfg)`` once its objective builds and the rows it makes from a block fit in
    ``model.max_len``: everything a run config can get wrong, found before any data is read."""
    cfg = resolve(cfg)
    check_trackers(cfg.train.log_to)
    objective = build_objective(cfg, config_vocab(cfg.data))
    block, max_len = cfg.data.block_size, cfg.model.max_len
    need = objective.positions_needed(block)
    if need > max_len:
        raise ConfigError(
            f"objective {cfg.objective!r} needs {need} positions for a block of data.block_size="
            f"{block} tokens, more than model.max_len={max_len}: raise model.max_len to {need} or "
            f"lower data.block_size to {objective.max_tokens(max_len)}")
    return cfg


def _wants_cuda(train: TrainConfig) -> bool:
    return train.device == "cuda" or (train.device == "auto" and torch.cuda.is_available())


def effective_precision(train: TrainConfig) -> str:
    """``bf16`` or ``fp32``, as a run on this machine computes: ``auto`` is bf16 autocast on
    CUDA only (on CPUs without bf16 instructions it is ~4x slower)."""
    bf16 = train.precision == "bf16" or (train.precision == "auto" and _wants_cuda(train))
    return "bf16" if bf16 else "fp32"


def pick_device(cfg: RunConfig) -> torch.device:
    if _wants_cuda(cfg.train):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but torch sees no CUDA device")
        rank = dist.get_rank() if dist.is_initialized() else 0
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def learning_rate(t: TrainConfig, progress: float) -> float:
    """The learning rate once ``progress`` (the fraction of the budget consumed after the step,
    on the budget's own axis) is reached: linear warmup over ``t.warmup``, then ``t.schedule``
    from ``t.lr`` down to ``t.lr * t.min_lr_ratio`` at the end of the budget (``wsd`` holds
    ``t.lr`` until its cooldown, the last ``WSD_COOLDOWN`` of the budget)."""
    if t.warmup and progress < t.warmup:
        return t.lr * progress / t.warmup
    rest = min(1.0, (progress - t.warmup) / max(1e-12, 1 - t.warmup))
    floor = t.lr * t.min_lr_ratio
    if t.schedule == "constant":
        return t.lr
    if t.schedule == "linear":
        return t.lr - (t.lr - floor) * rest
    if t.schedule == "wsd":
        cooled = 1 + (progress - 1) / WSD_COOLDOWN  # 0 where the cooldown starts, 1 at the end
        return t.lr - (t.lr - floor) * min(1.0, max(0.0, cooled))
    return floor + (t.lr - floor) * 0.5 * (1 + math.cos(math.pi * rest))


def row_seeds(seed: int, step: int, batch_size: int) -> np.ndarray:
    """One seed per row of the global batch at ``step``, by its index there: never the global
    RNG, and the same whichever rank or micro-batch the row lands in."""
    return np.random.SeedSequence([seed, step]).generate_state(batch_size, np.uint64)


def step_seed(seed: int, step: int) -> int:
    """One seed for the whole global batch at ``step`` (a mixture's choice of component for
    the step), apart from every row's seed."""
    return int(np.random.SeedSequence([seed, step], spawn_key=(1,)).generate_state(1, np.uint64)[0])


def build_modules(objective: Objective, cfg: ModelConfig, vocab_size: int) -> nn.ModuleDict:
    """The objective's own modules (none for most), initialised from torch's global RNG."""
    return nn.ModuleDict(objective.build_modules(cfg, vocab_size))


class ObjectiveLoss(nn.Module):
    """`Objective.loss` as a module: the encoder, the objective's modules and the loss run
    inside one ``forward``.

    DDP syncs gradients only for what its wrapped module's forward uses, and neither the head
    loss nor the objective's modules are part of ``Encoder.forward``; wrapping this instead of
    the encoder keeps them inside, and the encoder's attributes reachable.
    """

    def __init__(self, objective: Objective, model: Encoder | nn.Module, modules: nn.ModuleDict) -> None:
        super().__init__()
        self.objective = objective
        self.model = model  # the encoder, maybe compiled
        self.objective_modules = modules

    def forward(self, batch: ObjectiveBatch) -> tuple[dict[str, torch.Tensor], dict[str, tuple[float, float]]]:
        loss = self.objective.loss(self.model, self.objective_modules, batch)
        return loss.by_part(), loss.logs


class Trainer:
    """Trains one run into ``out``; ``run()`` resumes from the last checkpoint if there is one."""

    def __init__(self, cfg: RunConfig, out: Path, data: PreparedData | None = None,
                 callbacks: list[Callable[["Trainer"], None]] = (), progress: bool = True,
                 sinks: Sequence[MetricSink] = ()) -> None:
        """``sinks``: objects with ``log(row)`` and ``close()`` that get every metrics row (on
        rank 0), beside the trackers ``train.log_to`` names."""
        self.cfg = checked(cfg)
        self.out = Path(out)
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        t = self.cfg.train
        if t.batch_size < self.world * t.grad_accum:
            raise ConfigError(f"train.batch_size={t.batch_size} gives {self.world} processes x "
                              f"train.grad_accum={t.grad_accum} micro-batches less than one row "
                              f"each: raise train.batch_size to at least {self.world * t.grad_accum}")
        self.data = data or prepare_data(self.cfg.data, self.cfg.train.batch_size)
        self.objective = build_objective(self.cfg, self.data.vocab)
        self.device = pick_device(self.cfg)
        if self.cfg.train.threads:
            torch.set_num_threads(self.cfg.train.threads)
        torch.manual_seed(self.cfg.seed)  # weight init only; per-step randomness is seeded below
        self.model = Encoder(self.cfg.model, self.data.vocab.size).to(self.device)
        self.objective_modules = build_modules(self.objective, self.cfg.model, self.data.vocab.size).to(self.device)
        self.optimizer = self._optimizer()
        self.counters = Counters()
        self.callbacks = list(callbacks)
        self.progress = progress and self.rank == 0
        self.sinks = [*sinks, *open_trackers(self.cfg.train.log_to, self.out, self.cfg)] \
            if self.rank == 0 else []
        self.bf16 = effective_precision(self.cfg.train) == "bf16"
        # compile the encoder only: the chunked head loss is a Python loop over row chunks
        encoder = torch.compile(self.model) if self.cfg.train.compile else self.model
        self.forward_model: torch.nn.Module = ObjectiveLoss(self.objective, encoder, self.objective_modules)
        if self.world > 1:
            # an objective's own loss may leave encoder parameters unused (ELECTRA: the LM head)
            own_loss = type(self.objective).loss is not Objective.loss
            self.forward_model = torch.nn.parallel.DistributedDataParallel(
                self.forward_model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=own_loss)

    def parameters(self) -> list[nn.Parameter]:
        """What the optimizer trains: the encoder's parameters, then the objective's modules'."""
        return [*self.model.parameters(), *self.objective_modules.parameters()]

    def _optimizer(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": t.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        # fused: one kernel for all parameters, on CPU too (4x faster there than foreach)
        return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, fused=True)

    # -- one step -------------------------------------------------------------------------
    def budget_used(self) -> float:
        """The fraction of the budget consumed so far, on the budget's own axis."""
        return self.counters.on(self.cfg.budget.axis) / self.cfg.budget.value

    def micro_batches(self, step: int) -> list[ObjectiveBatch]:
        """This rank's share of the global batch at ``step``, in ``grad_accum`` micro-batches,
        made by the objective in force at the budget consumed so far (`Objective.at`).

        Each row draws from its own generator, seeded by its index in the global batch
        (`RowGenerator`), so the split over ranks and micro-batches never changes a mask."""
        t = self.cfg.train
        objective = self.objective.at(self.budget_used())
        rows = batch_rows(len(self.data.train), t.batch_size, step, self.cfg.seed)
        seeds = row_seeds(self.cfg.seed, step, t.batch_size)
        mine = np.arange(t.batch_size)[self.rank::self.world]  # indices in the global batch
        out = []
        for part in np.array_split(mine, t.grad_accum):
            blocks = torch.from_numpy(self.data.train[rows[part]].astype(np.int64))
            gen = RowGenerator(seeds[part].tolist(), seed=int(seeds[part[0]]), places=part.tolist(),
                               batch_size=t.batch_size, step_seed=step_seed(self.cfg.seed, step))
            out.append(objective.make_batch(blocks, gen))
        return out

    def _global_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def _step_means(self, pairs: dict[str, tuple[float, float]]) -> dict[str, float]:
        """``sum / count`` of each ``name: (sum, count)`` over all ranks (a name some rank
        lacks, such as a mixture component none of its rows drew, counts nothing there)."""
        if self.world > 1:
            names: list[list[str]] = [[] for _ in range(self.world)]
            dist.all_gather_object(names, sorted(pairs))
            pairs = {n: pairs.get(n, (0.0, 0.0)) for n in sorted(set().union(*names))}
        totals = self._global_sum([x for pair in pairs.values() for x in pair])
        return {name: totals[2 * k] / max(totals[2 * k + 1], 1e-12) for k, name in enumerate(pairs)}

    def train_step(self) -> dict[str, float]:
        c, t = self.counters, self.cfg.train
        batches = self.micro_batches(c.step)
        cost, n_inputs, parts = self._step_cost(batches)
        budget = self.cfg.budget
        lr = learning_rate(t, (c.on(budget.axis) + cost[budget.axis]) / budget.value)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        part_losses, logs = self._forward_backward(batches, parts)
        loss = sum(parts[n].weight * part_losses[n] for n in part_losses)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss} at step {c.step + 1}; the last good checkpoint in "
                f"{self.out / 'checkpoints'} is kept. Lower train.lr or raise train.warmup.")
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.parameters(), t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        c.step += 1
        c.tokens += cost["tokens"]
        c.input_tokens += n_inputs
        c.targets += int(cost["targets"])
        c.flops += cost["flops"]
        per_part = {f"loss/{n}": v for n, v in part_losses.items() if n}
        return {"loss": loss, "lr": lr, **per_part, **self._step_means(logs)}  # rates: mean over micro-batches

    def _step_cost(self, batches: list[ObjectiveBatch]) -> tuple[dict[str, float], int, dict[str, Part]]:
        """What the step costs on every budget axis, the input tokens it shows, and each loss
        part with its weight and its normaliser summed over the whole step (all micro-batches
        and processes); a part no row of the step holds (a mixture's component on another
        step) is left out: it weighs nothing."""
        pad = self.data.vocab["[PAD]"]
        parts = [b.loss_parts() for b in batches]
        names = list(parts[0])  # the same parts in every micro-batch and process
        local = [sum(self.objective.count_targets(b) for b in batches),
                 sum(int((b.input_ids != pad).sum()) for b in batches),
                 sum(self.objective.flops(self.cfg.model, self.data.vocab.size, b) for b in batches),
                 *(sum(p[n].normaliser for p in parts) for n in names)]
        n_targets, n_inputs, flops, *normalisers = self._global_sum(local)
        cost = {"steps": 1, "tokens": self.cfg.train.batch_size * self.data.train.shape[1],
                "targets": n_targets, "flops": flops}
        step_parts = {n: Part(parts[0][n].weight, v) for n, v in zip(names, normalisers) if v > 0}
        return cost, int(n_inputs), step_parts

    def _forward_backward(self, batches: list[ObjectiveBatch], parts: dict[str, Part]
                          ) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
        """Accumulate the step's gradients: each part's summed loss divided by its step total
        and weighed (`Part`). Returns each part's loss over the step and, as ``(sum, count)``,
        the loss hook's scalars and the applied rates."""
        totals = dict.fromkeys(parts, 0.0)
        logs: dict[str, tuple[float, float]] = {}
        for i, batch in enumerate(batches):
            batch = batch.to(self.device)
            sync = nullcontext() if i == len(batches) - 1 or self.world == 1 else self.forward_model.no_sync()
            with sync, torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                summed, batch_logs = self.forward_model(batch)
                # DDP averages gradients over ranks: undo that
                sum(summed[n] * (self.world * parts[n].weight) / parts[n].normaliser
                    for n in summed if n in parts).backward()
            for n in summed.keys() & totals.keys():
                totals[n] += float(summed[n].detach())
            _accumulate(logs, {**batch_logs, **{k: (v, 1.0) for k, v in batch.stats.items()}})
        step_totals = self._global_sum(list(totals.values()))
        return {n: v / parts[n].normaliser for n, v in zip(totals, step_totals)}, logs

    # -- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def validation_losses(self) -> dict[str, float]:
        """``val_loss``, the objective's loss over the validation blocks (by default: mean loss
        per target), and, for a composite objective, each part's (``val_loss/<part>``): every
        part's loss over the first ``data.val_blocks`` validation blocks divided by its total
        normaliser, and ``val_loss`` their weighted sum (`Part`), from the objective in force."""
        self.forward_model.eval()
        objective = self.objective.at(self.budget_used())
        val = self.data.validation[: self.cfg.data.val_blocks]
        total: dict[str, float] = {}
        count: dict[str, float] = {}
        weights: dict[str, float] = {}
        for k, start in enumerate(range(0, len(val), self.cfg.train.batch_size)):
            blocks = torch.from_numpy(val[start:start + self.cfg.train.batch_size].astype(np.int64))
            batch = objective.make_batch(blocks, torch.Generator().manual_seed(VAL_SEED + k))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                summed = objective.loss(self.model, self.objective_modules, batch.to(self.device)).by_part()
            for n, part in batch.loss_parts().items():
                total[n] = total.get(n, 0.0) + float(summed.get(n, 0.0))
                count[n], weights[n] = count.get(n, 0.0) + part.normaliser, part.weight
        self.forward_model.train()
        losses = {n: total[n] / count[n] for n in total if count[n] > 0}
        return {"val_loss": sum(weights[n] * losses[n] for n in losses),
                **{f"val_loss/{n}": v for n, v in losses.items() if n}}

    def eval_targets(self) -> list[float]:
        """Budget values at which to evaluate and keep a checkpoint (the last is the budget)."""
        b, n = self.cfg.budget, self.cfg.train.eval_points
        return [b.value * k / n for k in range(1, n + 1)]

    # -- run ------------------------------------------------------------------------------
    def run(self) -> Path:
        """Train to the budget (resuming if possible); return the final checkpoint.

        Ctrl-C raises `Interrupted`, which says where the run stopped."""
        try:
            return self._run()
        except KeyboardInterrupt:
            found = ckpt.checkpoints(self.out)
            raise Interrupted(f"at step {self.counters.step} of {self.out} (last checkpoint: "
                              f"{found[-1].name if found else 'none yet'})") from None
        finally:
            for sink in self.sinks:
                sink.close()

    def _run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        metrics_path = self.out / "metrics.jsonl"
        next_eval, fresh = self._resume(metrics_path)
        if self.rank == 0:
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            shutil.copyfile(self.data.tokenizer_path, self.out / "tokenizer.json")
        if fresh:
            self._log(metrics_path, {**asdict(self.counters), **self.validation_losses(),
                                     **self.parameter_counts()})
        axis, budget = self.cfg.budget.axis, self.cfg.budget.value
        targets = self.eval_targets()
        seen = SeenBlocks(len(self.data.train), self.cfg.train.batch_size, self.cfg.seed, self.counters.step)
        bar = progress_bar(total=budget, initial=self.counters.on(axis), disable=not self.progress,
                           desc=f"{self.cfg.objective} seed {self.cfg.seed}", unit=f" {axis}",
                           unit_scale=True, leave=False, summary=True)
        last = time.perf_counter()
        kept = ckpt.checkpoints(self.out)
        final = kept[-1] if kept else self.out  # a finished run resumed: its last checkpoint
        while self.counters.on(axis) < budget:
            before = self.counters.on(axis)
            seen.add(self.counters.step)
            row = self.train_step()
            row.update(self._data_use(seen))
            now = time.perf_counter()
            row["tokens_per_s"] = self.cfg.train.batch_size * self.data.train.shape[1] / (now - last)
            last = now
            is_eval = next_eval < len(targets) and self.counters.on(axis) >= targets[next_eval] * (1 - 1e-9)
            if is_eval:
                row.update(self.validation_losses())
                next_eval += 1
            self._log(metrics_path, {**asdict(self.counters), **row})
            bar.update(self.counters.on(axis) - before)
            bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
            if is_eval or self.counters.step % self.cfg.train.checkpoint_every == 0 \
                    or self.counters.on(axis) >= budget:
                final = self._checkpoint(next_eval, keep=is_eval)
            for cb in self.callbacks:
                cb(self)
        bar.close()
        return final

    def _data_use(self, seen: SeenBlocks) -> dict[str, float]:
        """Passes over the training split so far, and the unique tokens they held."""
        block_tokens = self.data.train.shape[1]
        return {"epoch": self.counters.tokens / (len(self.data.train) * block_tokens),
                "unique_tokens": seen.count * block_tokens}

    def parameter_counts(self) -> dict[str, int]:
        """Trained parameters (embeddings included), and those in the objective's own modules."""
        own = sum(p.numel() for p in self.objective_modules.parameters())
        return {"params": sum(p.numel() for p in self.model.parameters()) + own, "objective_params": own}

    def _log(self, path: Path, row: dict) -> None:
        if self.rank == 0:
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            for sink in self.sinks:
                sink.log(row)

    def _checkpoint(self, next_eval: int, keep: bool) -> Path:
        """Save (rank 0); checkpoints at evaluation points are kept, periodic ones replaced."""
        folder = self.out / "checkpoints" / f"step-{self.counters.step:07d}"
        if self.rank == 0:
            state = {"counters": asdict(self.counters), "next_eval": next_eval, "eval_point": keep,
                     "config": self.cfg.to_dict(), "tokenizer_hash": self.data.tokenizer_hash,
                     "corpus_hash": self.data.corpus_hash}
            ckpt.save(folder, self.model, self.optimizer, state, self.objective_modules)
            for old in ckpt.checkpoints(self.out)[:-1]:
                if not _kept(old):
                    shutil.rmtree(old)
        if self.world > 1:
            dist.barrier()
        return folder

    def _resume(self, metrics_path: Path) -> tuple[int, bool]:
        """Load the newest intact checkpoint, if any; trim metrics logged after it. Returns
        next_eval, and whether the run starts afresh (from its seed or from ``init``'s parent).

        Damaged checkpoints newer than it are moved to ``damaged/``, saying so in one line; a
        checkpoint of another config is refused.
        """
        damaged: list[tuple[Path, DamagedCheckpoint]] = []
        state = None
        for folder in reversed(ckpt.checkpoints(self.out)):
            try:
                state = ckpt.restore(folder, self.model, self.optimizer, self._check_matches(folder),
                                     self.objective_modules)
                break
            except DamagedCheckpoint as exc:  # found before anything was loaded
                damaged.append((folder, exc))
        if damaged:
            self._set_aside(damaged, folder if state else None)
        if state is None:
            if self.rank == 0:
                metrics_path.unlink(missing_ok=True)
            return (self._start_from_parent() if self.cfg.init else 0), True
        self.counters = Counters(**state["counters"])
        if self.rank == 0 and metrics_path.exists():
            kept = [l for l in metrics_path.read_text().splitlines()
                    if _step_of(l) is not None and _step_of(l) <= self.counters.step]
            metrics_path.write_text("".join(l + "\n" for l in kept))
        return state["next_eval"], False

    def _start_from_parent(self) -> int:
        """Continued pre-training: the parent run's encoder weights and budget counters at its
        evaluation point ``init.at``; a fresh optimizer and fresh objective modules. The run
        then trains to the end of the same budget, so parent and child together spend one
        budget. Returns the next evaluation point."""
        init = self.cfg.init
        folder = parent_checkpoint(Path(init.run), init.at)
        state = ckpt.load_state(folder)
        fix = f"start from a run with this run's model, data, seed and budget (init.run={init.run})"
        ckpt.check_config(folder, {**state, "config": _shared(state["config"])}, _shared(self.cfg.to_dict()),
                          self.data.tokenizer_hash, "this run", fix)
        state = ckpt.restore_encoder(folder, self.model)
        self.counters = Counters(**state["counters"])
        return state["next_eval"]

    def _check_matches(self, folder: Path) -> Callable[[dict], None]:
        """Refuse a checkpoint trained with another config or tokenizer than this run."""
        fix = "use a fresh output folder, or the settings the checkpoint was trained with"
        return lambda state: ckpt.check_config(folder, state, self.cfg.to_dict(),
                                               self.data.tokenizer_hash, "this run", fix)

    def _set_aside(self, damaged: list[tuple[Path, DamagedCheckpoint]], resumed: Path | None) -> None:
        """Move damaged checkpoints to ``damaged/`` (kept for inspection, out of the resume path)."""
        aside = self.out / "damaged"
        if self.world > 1:
            dist.barrier()  # every rank has read the checkpoints before rank 0 moves any
        if self.rank == 0:
            aside.mkdir(exist_ok=True)
            for folder, _ in damaged:
                shutil.rmtree(aside / folder.name, ignore_errors=True)
                shutil.move(str(folder), aside / folder.name)
            then = f"resuming from {resumed}" if resumed else "no intact checkpoint left: starting from step 0"
            warn(f"{'; '.join(str(exc) for _, exc in damaged)}; moved to {aside}; {then}")


def _accumulate(totals: dict[str, tuple[float, float]], more: dict[str, tuple[float, float]]) -> None:
    """Add ``name: (sum, count)`` pairs into ``totals``."""
    for name, (value, count) in more.items():
        so_far = totals.get(name, (0.0, 0.0))
        totals[name] = (so_far[0] + value, so_far[1] + count)


def parent_checkpoint(run: Path, at: float) -> Path:
    """The checkpoint of ``run`` kept at its evaluation point ``at`` (a budget fraction)."""
    points: dict[float, Path] = {}
    for folder in ckpt.checkpoints(run):
        state = ckpt.load_state(folder)
        if state.get("eval_point"):
            points[round(state["next_eval"] / state["config"]["train"]["eval_points"], 9)] = folder
    if round(at, 9) not in points:
        raise CheckpointError(f"init.run {run} has no checkpoint at evaluation point init.at={at} (it has "
                              f"{sorted(points) or 'none'}): train it first, or start at one of those")
    return points[round(at, 9)]


def _shared(config: dict) -> dict:
    """What a continued run shares with its parent: model, data, seed and budget."""
    return {k: config[k] for k in ("model", "data", "seed", "budget")}


def _kept(folder: Path) -> bool:
    """Whether an older checkpoint stays: evaluation points do, and so do damaged ones, for
    inspection (they are never loaded)."""
    try:
        return bool(ckpt.load_state(folder).get("eval_point"))
    except CheckpointError:
        return True


def _step_of(line: str) -> int | None:
    """The step of a metrics line, or None for a line cut off by a crash."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
