"""Composite objectives: a mixture of registered objectives, and a schedule of them over the budget.

A composite is an objective like any other: it makes one `CompositeBatch` per micro-batch,
made of its components' own batches (each component builds its rows with its own rules, draws
and attention), and the trainer, the budget counters and the leakage contract see it through
the same `Objective` methods as any other objective.

The loss rule: each component's summed loss is divided by that component's own normaliser
summed over the whole step (by default its number of targets), and the step's loss is the sum
over components of weight x that normalised loss (`Part`). A component that predicts every
position (causal LM) therefore weighs as much as its weight says, never as much as its
share of the step's targets (causal LM would otherwise outweigh MLM's 15% of positions about
6.7 to 1 at equal rows).

Weights are normalised to sum to 1. ``by: rows`` (mixture default) gives each component that
share of every batch's rows (the first rows of the global batch to the first component, and
so on, in counts of weight x rows rounded by largest remainder, at least one row each while a
larger component can spare it: every step holds the same rows of each);
``by: steps`` picks one component per training step at random with those probabilities (a
draw seeded by the step alone) and weighs its loss 1, so the expected loss is the same sum.
Outside training (validation, ``check-objective``) a mixture always splits by rows, so every
component is validated and checked on every batch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields, replace
from itertools import accumulate
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from objbench.harness.config import ModelConfig, validate
from objbench.harness.errors import ConfigError
from objbench.harness.model import Encoder
from objbench.harness.registry import OBJECTIVES
from objbench.objectives import draws
from objbench.objectives.base import (Loss, Objective, ObjectiveBatch, Options, Part, Predictions, Vocab,
                                      collate)
from objbench.objectives.sampling import Sampling

COMPOSITES = ("mixture", "schedule")  # registered names; a component cannot be one of them


class Component(Options):
    """One registered objective with its options, under a name unique in its composite."""

    objective: str = Field(description="a registered objective (`objbench objectives`), not a composite")
    options: dict[str, Any] = Field(default_factory=dict, description="its options (defaults filled in)")
    name: str | None = Field(None, description="its name in logs and reading rules; default: the "
                             "objective's name (required when two components share an objective)")
    mode_token: str | None = Field(None, description="a special token (listed in data.special_tokens) "
                                   "in place of [CLS] at the start of this component's rows and of its "
                                   "sentence scores: UL2's mode tokens")

    @model_validator(mode="before")
    @classmethod
    def _resolve_options(cls, data: Any) -> Any:
        """Validate the component's options against its objective and fill in their defaults,
        so the resolved config (and the run hash) holds every setting."""
        if not isinstance(data, dict) or not isinstance(data.get("objective"), str):
            return data
        if data["objective"] in COMPOSITES:
            raise ConfigError(f"a component cannot itself be a {data['objective']!r}: list its "
                              f"components in this one")
        target = OBJECTIVES.get(data["objective"])
        options = validate(target.Options, data.get("options") or {}, where=f"options of component "
                           f"{data.get('name') or data['objective']!r}")
        return {**data, "options": options.model_dump(mode="json")}

    @property
    def label(self) -> str:
        return self.name or self.objective

    def specials(self) -> list[str]:
        """Special tokens this component needs: its objective's, and its mode token."""
        target = OBJECTIVES.get(self.objective)
        needed = target.specials_needed(target.Options.model_validate(self.options))
        return [*needed, *([self.mode_token] if self.mode_token else [])]


class Weighted(Component):
    weight: float = Field(gt=0.0, description="share of the loss (and of the rows or steps); "
                          "the mixture's weights are normalised to sum to 1")


class Phase(Component):
    until: float = Field(1.0, gt=0.0, le=1.0, description="budget fraction at which the phase ends")
    ramp: dict[str, float] = Field(default_factory=dict, description="option values at the phase's "
                                   "end: each moves linearly from its value in options over the phase")

    @model_validator(mode="after")
    def _ramp_ends_valid(self) -> "Phase":
        for key in self.ramp:
            if not isinstance(self.options.get(key), float):
                raise ValueError(f"ramp.{key}: only float options of {self.objective!r} ramp "
                                 f"(its options: {', '.join(self.options)})")
        validate(OBJECTIVES.get(self.objective).Options, {**self.options, **self.ramp},
                 where=f"ramp end of phase {self.label!r}")
        return self


def _gpt_bert() -> list[Weighted]:
    return [Weighted(objective="clm", weight=1.0), Weighted(objective="mntp", weight=15.0)]


def _causal_then_masked() -> list[Phase]:
    return [Phase(objective="clm", until=0.4), Phase(objective="mlm")]


def _check_names(labels: list[str], reading: dict[str, str | None], what: str) -> None:
    """Names are unique, usable as module keys, and the reading rules name one of them."""
    repeated = sorted({n for n in labels if labels.count(n) > 1})
    if repeated:
        raise ValueError(f"two {what} are named {repeated[0]!r}: give each a distinct `name`")
    dotted = [n for n in labels if "." in n or "/" in n]
    if dotted:
        raise ValueError(f"{what[:-1]} name {dotted[0]!r} may not hold '.' or '/'")
    for rule, name in reading.items():
        if name is not None and name not in labels:
            raise ValueError(f"{rule}: {name!r} names no {what[:-1]}; known: {', '.join(labels)}")


class MixtureOptions(Options):
    components: list[Weighted] = Field(default_factory=_gpt_bert, min_length=1,
                                       description="default: GPT-BERT's 1 causal : 15 masked next-token")
    by: Literal["rows", "steps"] = Field("rows", description="mix within every step's rows, or one "
                                         "component per step")
    features: str | None = Field(None, description="component whose reading rules give features "
                                 "(attention, pooling); default: the largest weight (the first on ties)")
    score: str | None = Field(None, description="component whose sentence score is used; default: "
                              "the features component")

    @model_validator(mode="after")
    def _names(self) -> "MixtureOptions":
        _check_names([c.label for c in self.components], {"features": self.features, "score": self.score},
                     "components")
        return self


class ScheduleOptions(Options):
    phases: list[Phase] = Field(default_factory=_causal_then_masked, min_length=1,
                                description="in order; default: causal LM until 40%, then MLM")
    features: str | None = Field(None, description="phase whose reading rules give features; "
                                 "default: the last phase")
    score: str | None = Field(None, description="phase whose sentence score is used; default: the "
                              "features phase")

    @model_validator(mode="after")
    def _ends(self) -> "ScheduleOptions":
        _check_names([p.label for p in self.phases], {"features": self.features, "score": self.score},
                     "phases")
        ends = [p.until for p in self.phases]
        if ends[-1] != 1.0 or any(a >= b for a, b in zip(ends, ends[1:])):
            raise ValueError(f"phases' `until` must rise strictly and the last be 1.0 (got {ends})")
        return self


@dataclass
class Share:
    """A component's rows of a composite batch: rows ``first .. first + rows - 1``."""

    name: str
    objective: Objective
    batch: ObjectiveBatch
    first: int

    @property
    def rows(self) -> int:
        return self.batch.input_ids.shape[0]


@dataclass
class CompositeBatch(ObjectiveBatch):
    """A composite objective's batch: its components' batches (``shares``, in row order), and
    a padded view of all of them in the `ObjectiveBatch` fields (what budget counters and the
    contract read). ``part_weights`` weighs every component, present in this batch or not."""

    shares: tuple[Share, ...] = ()
    part_weights: dict[str, float] = field(default_factory=dict)

    def loss_parts(self) -> dict[str, Part]:
        present = {s.name: s.batch.loss_normaliser for s in self.shares}
        return {n: Part(w, present.get(n, 0.0)) for n, w in self.part_weights.items()}

    def to(self, device: torch.device | str) -> "CompositeBatch":
        moved = super().to(device)
        return replace(moved, shares=tuple(replace(s, batch=s.batch.to(device)) for s in self.shares))

    def row(self, b: int, pad_id: int) -> "CompositeBatch":
        share = next(s for s in self.shares if s.first <= b < s.first + s.rows)
        alone = replace(share, batch=share.batch.row(b - share.first, pad_id), first=0)
        return composite_batch([alone], self.part_weights, pad_id)


def composite_batch(shares: list[Share], part_weights: dict[str, float], pad_id: int,
                    stats: dict[str, float] | None = None) -> CompositeBatch:
    """The shares, with their padded view and their stats under ``<component>/``."""
    view = collate([s.batch for s in shares], pad_id)
    own = {f"{s.name}/{k}": v for s in shares for k, v in s.batch.stats.items()}
    return CompositeBatch(**{f.name: getattr(view, f.name) for f in fields(ObjectiveBatch)
                             if f.name not in ("stats", "normaliser")},
                          stats={**own, **(stats or {})}, shares=tuple(shares), part_weights=dict(part_weights),
                          normaliser=sum(s.batch.loss_normaliser for s in shares))


def row_counts(weights: list[float], size: int) -> list[int]:
    """Rows of a ``size``-row batch for each weight: the largest remainders of weight x size,
    then at least one row for every component while a larger one can spare it, so a small
    weight still trains (and is validated) on every step."""
    exact = [w * size for w in weights]
    counts = [math.floor(x) for x in exact]
    for k in sorted(range(len(exact)), key=lambda k: counts[k] - exact[k])[: size - sum(counts)]:
        counts[k] += 1
    for k, n in enumerate(counts):
        if n == 0 and max(counts) > 1:
            counts[counts.index(max(counts))] -= 1
            counts[k] = 1
    return counts


def build_component(spec: Component, vocab: Vocab) -> Objective:
    """The component's objective, its options already validated; its specials must be in the vocabulary."""
    missing = [s for s in spec.specials() if s not in vocab.specials]
    if missing:
        raise ConfigError(f"component {spec.label!r} ({spec.objective}) needs the special tokens {missing}: "
                          f"add them to data.special_tokens")
    cls = OBJECTIVES.get(spec.objective)
    return cls(cls.Options.model_validate(spec.options), vocab)


class ModeMarked:
    """An encoder that reads a mode token wherever a row starts with ``[CLS]``, so that a
    component's sampler, which builds its own rows, sees the mode token its rows trained with."""

    def __init__(self, encoder: Encoder, cls_id: int, mode_id: int) -> None:
        self.encoder, self.cls_id, self.mode_id = encoder, cls_id, mode_id

    def __call__(self, input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        ids = input_ids.clone()
        ids[ids[:, 0] == self.cls_id, 0] = self.mode_id
        return self.encoder(ids, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # logits, the embeddings: the encoder's own
        return getattr(self.encoder, name)


class Composite(Objective):
    """What mixtures and schedules share: components, reading rules taken from the components
    the options name, and loss, targets, FLOPs, predictions and visibility computed share by
    share of the batch. Subclasses set ``weights`` and ``features_name``/``score_name``."""

    specs_field: ClassVar[str]  # the options field listing the components
    weights: dict[str, float]
    features_name: str
    score_name: str

    def __init__(self, options: Options, vocab: Vocab) -> None:
        super().__init__(options, vocab)
        self.components = {spec.label: build_component(spec, vocab) for spec in self.specs}
        self.modes = {spec.label: vocab[spec.mode_token] for spec in self.specs if spec.mode_token}

    @property
    def specs(self) -> list[Component]:
        return getattr(self.options, self.specs_field)

    @classmethod
    def specials_needed(cls, options: Options) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s for spec in getattr(options, cls.specs_field) for s in spec.specials()))

    # -- reading: delegated to the components the options name -----------------------------
    @property
    def reading_attention(self) -> str:  # type: ignore[override]
        return self.components[self.features_name].reading_attention

    @property
    def pooling(self) -> str:  # type: ignore[override]
        return self.components[self.features_name].pooling

    @property
    def score_kind(self) -> str:  # type: ignore[override]
        return self.components[self.score_name].score_kind

    @property
    def score_method(self) -> str:  # type: ignore[override]
        return f"{self.score_name}'s: " + self.components[self.score_name].score_method

    def score_rows(self, tokens: torch.Tensor) -> ObjectiveBatch:
        return self.marked(self.score_name, self.components[self.score_name].score_rows(tokens))

    @property
    def score_variants(self) -> tuple[str, ...]:  # type: ignore[override]
        """The other components that score sentences, by name: a GPT-BERT mixture scored by its
        masked component is also read as the causal LM it trained."""
        return tuple(n for n, c in self.components.items() if n != self.score_name and c.score_kind != "none")

    def scoring(self, variant: str) -> "Composite":
        """This composite scored (and sampled) by component ``variant`` instead."""
        self._check_variant(variant)
        now = copy.copy(self)
        now.score_name = variant
        return now

    @property
    def sampler(self) -> str:  # type: ignore[override]
        """The score component generates (with its mode token, if it has one)."""
        own = self.components[self.score_name].sampler
        return f"{self.score_name}'s: {own}" if own else ""

    def sample(self, encoder: Encoder, prompts: torch.Tensor, length: int, how: Sampling,
               gen: torch.Generator) -> torch.Tensor:
        if not self.sampler:
            return super().sample(encoder, prompts, length, how, gen)
        if self.score_name in self.modes:
            encoder = ModeMarked(encoder, self.vocab["[CLS]"], self.modes[self.score_name])
        return self.components[self.score_name].sample(encoder, prompts, length, how, gen)

    def marked(self, name: str, batch: ObjectiveBatch) -> ObjectiveBatch:
        """``batch`` with component ``name``'s mode token, if it has one, in place of each row's
        leading ``[CLS]`` (a special that shows no text: what every target may see is unchanged)."""
        if name not in self.modes:
            return batch
        ids = batch.input_ids.clone()
        ids[ids[:, 0] == self.vocab["[CLS]"], 0] = self.modes[name]
        return replace(batch, input_ids=ids)

    def reading_batch(self, batch: CompositeBatch) -> ObjectiveBatch:  # type: ignore[override]
        """The features component's rows: its context is what features are read like."""
        return next((s.batch for s in batch.shares if s.name == self.features_name), batch)

    def positions_needed(self, n_tokens: int) -> int:
        """The most any component needs: configs are checked, and sentences cut, by it."""
        return max(c.positions_needed(n_tokens) for c in self.components.values())

    # -- batches ---------------------------------------------------------------------------
    def by_rows(self, blocks: torch.Tensor, gen: torch.Generator, weights: dict[str, float],
                stats: dict[str, float] | None = None) -> CompositeBatch:
        """Each component's share of the rows by ``weights`` (see the module docstring), made
        by the component from those rows' own generators."""
        places, size = draws.strata(gen, blocks.shape[0])
        starts = [0, *accumulate(row_counts(list(weights.values()), size))]
        owner = torch.searchsorted(torch.tensor(starts[1:]), places, right=True)
        if (owner[1:] < owner[:-1]).any():
            raise ValueError("a composite batch needs its rows in the order of their places in the global batch")
        shares = []
        for k, name in enumerate(weights):
            rows = torch.nonzero(owner == k).flatten()
            if len(rows):
                sub = draws.subset(gen, rows.tolist(), (places[rows] - starts[k]).tolist(), starts[k + 1] - starts[k])
                made = self.marked(name, self.components[name].make_batch(blocks[rows], sub))
                shares.append(Share(name, self.components[name], made, int(rows[0])))
        return composite_batch(shares, weights, self.vocab["[PAD]"], stats)

    def alone(self, name: str, objective: Objective, blocks: torch.Tensor, gen: torch.Generator,
              stats: dict[str, float] | None = None) -> CompositeBatch:
        """Every row from one component, whose loss then weighs 1 (the others 0)."""
        share = Share(name, objective, self.marked(name, objective.make_batch(blocks, gen)), 0)
        return composite_batch([share], {n: float(n == name) for n in self.weights}, self.vocab["[PAD]"], stats)

    # -- the loss and what it costs, share by share -----------------------------------------
    def build_modules(self, model: ModelConfig, vocab_size: int) -> dict[str, nn.Module]:
        built = {n: c.build_modules(model, vocab_size) for n, c in self.components.items()}
        return {n: nn.ModuleDict(m) for n, m in built.items() if m}

    def _modules(self, modules: nn.ModuleDict, name: str) -> nn.ModuleDict:
        return modules[name] if name in modules else nn.ModuleDict()

    def loss(self, encoder: nn.Module, modules: nn.ModuleDict, batch: CompositeBatch) -> Loss:  # type: ignore[override]
        parts, logs = {}, {}
        for s in batch.shares:
            out = s.objective.loss(encoder, self._modules(modules, s.name), s.batch)
            parts[s.name] = out.summed
            logs.update({f"{s.name}/{k}": v for k, v in out.logs.items()})
        return Loss(sum(parts.values()), logs, parts)

    def predictions(self, encoder: nn.Module, modules: nn.ModuleDict,  # type: ignore[override]
                    batch: CompositeBatch) -> list[Predictions]:
        B, T = batch.input_ids.shape
        out = []
        for s in batch.shares:
            for p in s.objective.predictions(encoder, self._modules(modules, s.name), s.batch):
                where = torch.zeros(B, T, dtype=torch.bool, device=p.where.device)
                where[s.first:s.first + s.rows, :p.where.shape[1]] = p.where
                out.append(Predictions(f"{s.name}:{p.kind}", where, p.values, p.target_source,
                                       p.sees_own_target or s.objective.sees_own_target))
        return out

    def visibility(self, batch: CompositeBatch, block_len: int) -> torch.Tensor:  # type: ignore[override]
        B, T = batch.input_ids.shape
        out = torch.zeros(B, T, block_len, dtype=torch.bool)
        for s in batch.shares:
            seen = s.objective.visibility(s.batch, block_len)
            out[s.first:s.first + s.rows, :seen.shape[1]] = seen
        return out

    def count_targets(self, batch: CompositeBatch) -> int:  # type: ignore[override]
        return sum(s.objective.count_targets(s.batch) for s in batch.shares)

    def flops(self, model: ModelConfig, vocab_size: int, batch: CompositeBatch) -> float:  # type: ignore[override]
        return sum(s.objective.flops(model, vocab_size, s.batch) for s in batch.shares)


class Mixture(Composite):
    description = "a weighted mixture of registered objectives, by rows of every step or by step"
    Options = MixtureOptions
    specs_field = "components"

    def __init__(self, options: MixtureOptions, vocab: Vocab) -> None:
        super().__init__(options, vocab)
        total = sum(c.weight for c in options.components)
        self.weights = {c.label: c.weight / total for c in options.components}
        self.features_name = options.features or max(self.weights, key=self.weights.__getitem__)
        self.score_name = options.score or self.features_name

    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> CompositeBatch:
        step = draws.shared(gen)
        if self.options.by == "rows" or step is None:
            return self.by_rows(blocks, gen, self.weights)
        cum = torch.tensor(list(accumulate(self.weights.values())), dtype=torch.float64)
        k = min(int(torch.searchsorted(cum, torch.rand((), generator=step, dtype=torch.float64), right=True)),
                len(cum) - 1)
        name = list(self.weights)[k]
        return self.alone(name, self.components[name], blocks, gen)


class Schedule(Composite):
    description = "registered objectives in phases over the budget, options ramped linearly within a phase"
    Options = ScheduleOptions
    specs_field = "phases"

    def __init__(self, options: ScheduleOptions, vocab: Vocab) -> None:
        super().__init__(options, vocab)
        starts = [0.0, *(p.until for p in options.phases[:-1])]
        self.spans = {p.label: (start, p.until) for p, start in zip(options.phases, starts)}
        self.weights = {name: end - start for name, (start, end) in self.spans.items()}
        self.features_name = options.features or options.phases[-1].label
        self.score_name = options.score or self.features_name
        self.progress: float | None = None  # set on the copies `at` returns

    def at(self, progress: float) -> "Schedule":
        """A copy that makes the batches of the phase in force at ``progress``. Without a
        progress (validation of a bare schedule, ``check-objective``) every phase gets its
        budget share of the rows, at its starting options, so every phase is checked."""
        now = copy.copy(self)
        now.progress = progress
        return now

    def phase_at(self, progress: float) -> int:
        """The phase in force once ``progress`` of the budget is consumed."""
        return next((k for k, p in enumerate(self.options.phases) if progress < p.until), len(self.spans) - 1)

    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> CompositeBatch:
        if self.progress is None:
            return self.by_rows(blocks, gen, self.weights)
        k = self.phase_at(self.progress)
        spec = self.options.phases[k]
        objective, values = self.ramped(spec, self.progress)
        stats = {"phase": float(k), **{f"{spec.label}/{o}": v for o, v in values.items()}}
        return self.alone(spec.label, objective, blocks, gen, stats)

    def ramped(self, spec: Phase, progress: float) -> tuple[Objective, dict[str, float]]:
        """The phase's objective at ``progress``, its ramped options moved linearly from their
        start to their end over the phase, and those options' values."""
        if not spec.ramp:
            return self.components[spec.label], {}
        start, end = self.spans[spec.label]
        frac = min(1.0, max(0.0, (progress - start) / (end - start)))
        values = {o: spec.options[o] + (v - spec.options[o]) * frac for o, v in spec.ramp.items()}
        cls = OBJECTIVES.get(spec.objective)
        return cls(cls.Options.model_validate({**spec.options, **values}), self.vocab), values
