"""The objective contract.

An objective turns clean token blocks into what the shared encoder sees and what it must
predict. It never touches the optimizer or data loader, and draws all randomness from the
``torch.Generator`` it is handed. By default the loss is the token cross-entropy through the
encoder's tied head at every target, divided by the number of targets; an objective may
instead weigh targets, pick the normaliser, own modules of its own (a generator, a binary
head) and compute its loss from the encoder outputs it asks for (`Objective.loss`, fairseq's
criterion pattern).

Target convention (stated once, used everywhere): ``targets[b, i]`` is the token that the
hidden state at position ``i`` must predict, or ``IGNORE``. Nobody shifts later.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from objbench.harness.config import ModelConfig
from objbench.harness.errors import ScoringNotApplicable
from objbench.harness.flops import train_flops
from objbench.harness.lm_loss import linear_cross_entropy
from objbench.harness.model import Encoder, query_rows
from objbench.objectives import draws

if TYPE_CHECKING:
    from objbench.objectives.sampling import Sampling

IGNORE = -100
BASE_SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")
#: how a sentence score relates to the sentence's log-likelihood: equal to it ("exact"), a
#: pseudo-log-likelihood that is no likelihood ("pseudo"), an estimate of a lower bound on it
#: such as a Monte Carlo ELBO ("bound"), or no score at all ("none")
ScoreKind = Literal["exact", "pseudo", "bound", "none"]
#: sentence features read at [CLS], at the last token, or as the mean over the text tokens
Pooling = Literal["cls", "last", "mean"]


def special_tokens(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The base specials, then the extras objectives ask for, without repeats, in a fixed order."""
    return list(BASE_SPECIALS) + sorted(set(extra) - set(BASE_SPECIALS))


class Options(BaseModel):
    """Base for an objective's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Vocab:
    """What an objective may know about the tokenizer."""

    size: int
    specials: dict[str, int]  # "[PAD]" -> id, ... (base specials plus objective extras)
    word_start: torch.Tensor  # bool (size,): token begins a word (for whole-word masking)

    def __getitem__(self, name: str) -> int:
        return self.specials[name]

    @property
    def special_ids(self) -> torch.Tensor:
        return torch.tensor(sorted(self.specials.values()))

    def is_special(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.isin(ids, self.special_ids.to(ids.device))

    def random_tokens(self, shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
        """Uniformly random non-special token ids ``(rows, width)`` (specials hold the first ids
        of every objbench vocabulary), e.g. BERT's random replacements; each row from its own
        generator under a `RowGenerator` (`objbench.objectives.draws`)."""
        return draws.randint(gen, len(self.specials), self.size, *shape)


@dataclass
class ObjectiveBatch:
    """What the encoder sees and must predict, plus the provenance the leakage tests need.

    ``source_index[b, i]`` is the index in the clean block whose token position ``i`` shows
    (-1 when it shows none: specials, ``[MASK]``, a random replacement). ``target_source`` is
    the clean index of the token predicted at ``i`` (-1 for specials such as ``[E]``).

    ``weights`` (float, same shape) weighs each target's loss (None: 1 each); ``normaliser`` is
    what the batch's summed loss is divided by (None: its number of targets; masked diffusion
    divides by the number of text positions). The normaliser is part of the batch, not of the
    loss, because the trainer must know the step's total before the first backward pass:
    gradient accumulation and DDP scale every micro-batch's gradients by it. ``extra`` holds
    tensors the objective's own `Objective.loss` reads (e.g. the uniform draws that make a
    generator's sampling reproducible); ``stats`` the rates it applied, logged every step.
    """

    input_ids: torch.Tensor
    targets: torch.Tensor
    attn: str | torch.Tensor  # "bidirectional" | "causal" | bool (B, T, T), True = may attend
    source_index: torch.Tensor
    target_source: torch.Tensor
    position_ids: torch.Tensor | None = None
    segment_ids: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)
    weights: torch.Tensor | None = None
    normaliser: float | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "ObjectiveBatch":
        move = lambda t: t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t
        moved = {f: move(getattr(self, f)) for f in ("input_ids", "targets", "attn", "source_index",
                                                     "target_source", "position_ids", "segment_ids",
                                                     "weights")}
        return replace(self, **moved, extra={k: move(v) for k, v in self.extra.items()})

    def row(self, b: int, pad_id: int) -> "ObjectiveBatch":
        """Row ``b`` alone, its padding cut off: every ``(B, T, ...)`` tensor, ``extra`` ones
        included, sliced to ``[b:b + 1, :n]``; the normaliser kept. FLOPs are counted per row as
        it runs alone, so how rows are batched never changes a count (`Objective.flops`)."""
        B, T = self.input_ids.shape
        n = int((self.input_ids[b] != pad_id).sum())

        def cut(t: torch.Tensor | str | None) -> torch.Tensor | str | None:
            if not isinstance(t, torch.Tensor) or t.shape[:1] != (B,):
                return t
            if t.dim() >= 3 and t.shape[1:3] == (T, T):  # an attention pattern
                return t[b:b + 1, :n, :n]
            return t[b:b + 1, :n] if t.dim() >= 2 and t.shape[1] == T else t[b:b + 1]

        fields = ("input_ids", "targets", "attn", "source_index", "target_source", "position_ids",
                  "segment_ids", "weights")
        return replace(self, **{f: cut(getattr(self, f)) for f in fields},
                       extra={k: cut(v) for k, v in self.extra.items()}, stats={})

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())

    @property
    def loss_normaliser(self) -> float:
        return float(self.n_targets) if self.normaliser is None else float(self.normaliser)

    def loss_parts(self) -> dict[str, "Part"]:
        """The parts whose summed losses the trainer normalises separately: one, unnamed, for
        an ordinary batch; one per component for a composite objective's batch."""
        return {"": Part(1.0, self.loss_normaliser)}


@dataclass(frozen=True)
class Part:
    """One part of a step's loss: the step's loss is the sum over parts of ``weight`` x the
    part's summed loss / the part's normaliser summed over the whole step (all micro-batches
    and processes), so each part is normalised by its own targets, not by everyone's."""

    weight: float
    normaliser: float


@dataclass
class Loss:
    """What `Objective.loss` returns: the batch's loss summed over its targets (weights applied,
    in at least fp32; the trainer divides it by the step's total `ObjectiveBatch.loss_normaliser`)
    and scalars to log, each as ``(sum, count)``: the step logs ``sum / count`` over all its
    micro-batches and ranks (e.g. a generator's loss per masked token). A composite objective
    also gives each part's summed loss in ``parts`` (`Part`)."""

    summed: torch.Tensor
    logs: dict[str, tuple[float, float]] = field(default_factory=dict)
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # summed loss per named part

    def by_part(self) -> dict[str, torch.Tensor]:
        """The summed loss of each part `ObjectiveBatch.loss_parts` names (one unnamed part
        unless the objective is composite)."""
        return self.parts or {"": self.summed}


@dataclass
class Predictions:
    """One kind of target in a batch and the model's outputs for it: what the leakage contract
    measures (`objbench.objectives.contract`).

    ``where`` (bool ``(B, T')``) marks the positions holding a target of this kind; ``values``
    ``(N, K)`` are the outputs its loss reads there (logits), in row-major order of ``where``;
    ``target_source`` ``(N,)`` is the clean index whose token each target must not see (its
    own token), -1 where the target hides none. Each output is held to what
    `Objective.visibility` declares for its position.
    """

    kind: str
    where: torch.Tensor
    values: torch.Tensor
    target_source: torch.Tensor
    sees_own_target: bool = False  # these targets may see their own token (a composite's part)


def token_loss(encoder: Encoder, batch: ObjectiveBatch) -> torch.Tensor:
    """The default loss: summed (weighted) cross-entropy over the batch's targets through the
    encoder's tied head, in at least fp32, with the last block's outputs and the head computed
    only at target positions."""
    keep = batch.targets != IGNORE
    hidden = encoder(batch.input_ids, batch.attn, batch.position_ids, batch.segment_ids, at=keep)
    weights = None if batch.weights is None else batch.weights[keep]
    return linear_cross_entropy(hidden, encoder.tok.weight, encoder.head_bias, batch.targets[keep], weights)


def token_loss_flops(cfg: ModelConfig, vocab_size: int, batch: ObjectiveBatch, pad_id: int) -> float:
    """What `token_loss` and its backward cost on this batch (`objbench.harness.flops`), each row
    as it runs alone: at its own length, its last block at its own targets (`query_rows`'s
    rule for one row). Padding to the batch's longest row never counts, so how rows are grouped
    into processes and micro-batches never changes the count, nor a FLOPs budget's end."""
    lengths = (batch.input_ids != pad_id).sum(1).tolist()
    targets = (batch.targets != IGNORE).sum(1).tolist()
    return sum(train_flops(cfg, vocab_size, 1, n, t, t if 0 < 2 * t <= n else None)
               for n, t in zip(lengths, targets))


class Objective(ABC):
    """A pre-training objective. Subclasses set the class variables and implement `make_batch`
    (and `score_rows`, unless ``score_kind`` is ``"none"``); the rest has defaults.

    Reading rules tell probe tasks how to read a model trained with this objective, so no task
    ever special-cases an objective's name. They are declared by use: features
    (``reading_attention``, ``pooling``), scoring (``score_kind``, ``score_method``,
    `score_rows`) and length (`positions_needed`, hence `max_tokens`).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[Options]] = Options
    special_tokens: ClassVar[tuple[str, ...]] = ()  # needed beyond BASE_SPECIALS
    #: does any target legitimately see its own clean token? (BERT's "keep" replacements)
    sees_own_target: ClassVar[bool] = False

    #: attention features are read with; "anticausal" (each position sees itself and what
    #: follows) suits a right-to-left model, and exists for reading only
    reading_attention: Literal["bidirectional", "causal", "anticausal"] = "bidirectional"
    pooling: Pooling = "cls"
    score_kind: ScoreKind = "exact"
    score_method: str = ""  # one line: how ``score_rows`` scores a sentence
    #: other sentence scores this objective offers besides its options' own (`scoring`), such as
    #: a pseudo-log-likelihood's ``pll-word-l2r``; zero-shot tasks can report each beside it
    score_variants: tuple[str, ...] = ()
    #: one line: how `sample` continues a text ("" = it cannot: generation is not applicable)
    sampler: str = ""

    def __init__(self, options: Options, vocab: Vocab) -> None:
        self.options = options
        self.vocab = vocab

    @classmethod
    def specials_needed(cls, options: Options) -> tuple[str, ...]:
        """Special tokens these options need beyond `BASE_SPECIALS`: by default the class's
        ``special_tokens``; a composite objective needs those of its components."""
        return cls.special_tokens

    def at(self, progress: float) -> "Objective":
        """The objective in force once ``progress`` (a fraction) of the run's budget is
        consumed, on the budget's own axis: itself, unless it is a schedule."""
        return self

    @abstractmethod
    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> ObjectiveBatch:
        """Training batch from clean blocks ``(B, T)`` of token ids (no specials added yet)."""

    def score_rows(self, tokens: torch.Tensor) -> ObjectiveBatch:
        """Rows whose weighted target log-probabilities sum to the sentence's score.

        ``tokens`` is one sentence ``(n,)`` without specials. For an ``exact`` or ``pseudo``
        score every one of the sentence's ``n`` tokens is a target exactly once across the rows
        (weight 1), with ``target_source`` its index, so summed and length-normalised scores are
        comparable across objectives. A ``bound`` is an estimate: any targets, with the weights
        that make their sum the estimate, drawn from a generator the objective seeds itself so
        a sentence always gets the same score. Objectives whose ``score_kind`` is ``"none"``
        keep this default, which says so.
        """
        raise ScoringNotApplicable(f"objective {type(self).__name__} has no sentence score "
                                   f"(score_kind {self.score_kind!r})")

    def scoring(self, variant: str) -> "Objective":
        """This objective scoring sentences by ``variant``, one of `score_variants` (its reading
        for score rows only: training is unchanged). By default a variant is a value of the
        objective's ``score`` option; one whose variants are something else overrides this."""
        self._check_variant(variant)
        if "score" not in type(self.options).model_fields:
            raise NotImplementedError(f"{type(self).__name__} declares score variants but has no `score` "
                                      f"option and no scoring()")
        return type(self)(self.options.model_copy(update={"score": variant}), self.vocab)

    def _check_variant(self, variant: str) -> None:
        if variant not in self.score_variants:
            raise ScoringNotApplicable(f"objective {type(self).__name__} has no score variant {variant!r} "
                                       f"(it offers: {', '.join(self.score_variants) or 'none'})")

    def sample(self, encoder: Encoder, prompts: torch.Tensor, length: int, how: "Sampling",
               gen: torch.Generator) -> torch.Tensor:
        """Continuations ``(B, length)`` of ``prompts`` ``(B, N)`` (token ids, no specials),
        drawn as ``how`` says (`objbench.objectives.sampling`) from ``gen`` alone. Objectives
        that can generate declare ``sampler`` and override this."""
        raise NotImplementedError(f"objective {type(self).__name__} declares no sampler")

    # -- the loss (defaults: the token cross-entropy, no modules of its own) -------------
    def build_modules(self, model: ModelConfig, vocab_size: int) -> dict[str, nn.Module]:
        """Modules this objective trains besides the encoder (ELECTRA's generator and binary
        head), built from the run's model config with torch's global RNG, which the trainer
        has seeded. The trainer optimizes them with the encoder, checkpoints them in the same
        safetensors file (under ``objective.``), wraps them in DDP and moves them to the
        device. Default: none."""
        return {}

    def loss(self, encoder: Encoder, modules: nn.ModuleDict, batch: ObjectiveBatch) -> Loss:
        """The batch's summed loss from the outputs this objective asks the encoder (and its
        modules) for. Default: `token_loss`. An override must draw no randomness of its own
        (put draws in the batch's ``extra``) and must count its FLOPs in `flops`."""
        return Loss(token_loss(encoder, batch))

    def predictions(self, encoder: Encoder, modules: nn.ModuleDict, batch: ObjectiveBatch) -> list[Predictions]:
        """Every kind of target `loss` trains, with the outputs it reads (for the leakage
        contract; fp64 models, no gradient). Default: the LM head's logits at every target."""
        where = batch.targets != IGNORE
        hidden = encoder(batch.input_ids, batch.attn, batch.position_ids, batch.segment_ids)
        return [Predictions("token", where, encoder.logits(hidden)[where], batch.target_source[where])]

    def count_targets(self, batch: ObjectiveBatch) -> int:
        """Predictions the batch trains: the ``targets`` budget axis. Default: its targets."""
        return batch.n_targets

    def flops(self, model: ModelConfig, vocab_size: int, batch: ObjectiveBatch) -> float:
        """Matmul FLOPs of `loss` and its backward on this batch, modules included, each row
        counted as it runs alone without padding (`ObjectiveBatch.row`): the ``flops`` budget
        axis (checked against torch's FLOP counter, row by row, by the contract)."""
        return token_loss_flops(model, vocab_size, batch, self.vocab["[PAD]"])

    def reading_batch(self, batch: ObjectiveBatch) -> ObjectiveBatch:
        """The rows of a training batch whose context the reading rules follow (the contract
        compares their attention with ``reading_attention``): all of them, unless the objective
        is composite (its features component's rows)."""
        return batch

    def positions_needed(self, n_tokens: int) -> int:
        """Position embeddings (largest position id + 1) that a row built from ``n_tokens`` clean
        tokens uses, in training (``make_batch``) and scoring (``score_rows``) alike.

        Configs are checked against it before any work (``model.max_len``), and readers cut
        sentences to the longest ``n`` that fits. Default: ``[CLS]`` then the tokens. The
        contract test holds every objective to what this returns.
        """
        return n_tokens + 1

    def max_tokens(self, max_len: int) -> int:
        """The longest sentence (tokens, no specials) whose rows fit in ``max_len`` positions."""
        n = max_len
        while n > 0 and self.positions_needed(n) > max_len:
            n -= 1
        return n

    def visibility(self, batch: ObjectiveBatch, block_len: int) -> torch.Tensor:
        """Which clean tokens each position's output may depend on: bool ``(B, T', T)``.

        Default: information flows along attention edges across layers, so position ``i``
        sees every position reachable in the transitive closure of the attention graph, and
        through it the clean tokens those positions show. Override to state it otherwise;
        the contract tests hold every objective to what this returns.
        """
        reach = attention_matrix(batch.attn, batch.input_ids)
        reach = reach | torch.eye(reach.shape[-1], dtype=torch.bool)
        while True:  # transitive closure by repeated boolean squaring
            nxt = (reach.float() @ reach.float()) > 0
            if torch.equal(nxt, reach):
                break
            reach = nxt
        shows = torch.zeros(*batch.source_index.shape, block_len, dtype=torch.bool)
        b, i = torch.nonzero(batch.source_index >= 0, as_tuple=True)
        shows[b, i, batch.source_index[b, i]] = True
        return (reach.float() @ shows.float()) > 0


def attention_matrix(attn: str | torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """The bool ``(B, T, T)`` form of any attention pattern (True = may attend)."""
    B, T = input_ids.shape
    if isinstance(attn, torch.Tensor):
        return attn
    full = torch.ones(T, T, dtype=torch.bool, device=input_ids.device)
    patterns = {"bidirectional": full, "causal": torch.tril(full), "anticausal": torch.triu(full)}
    if attn not in patterns:
        raise ValueError(f"unknown attention {attn!r}; known: {', '.join(patterns)} or a bool mask")
    return patterns[attn].expand(B, T, T)


def collate(rows: list[ObjectiveBatch], pad_id: int) -> ObjectiveBatch:
    """Pad batches of different lengths into one (their target weights too); padded positions
    attend only to themselves."""
    L = max(r.input_ids.shape[1] for r in rows)
    B = sum(r.input_ids.shape[0] for r in rows)
    out_ids = torch.full((B, L), pad_id, dtype=torch.long)
    out_tg = torch.full((B, L), IGNORE, dtype=torch.long)
    out_src = torch.full((B, L), -1, dtype=torch.long)
    out_tsrc = torch.full((B, L), -1, dtype=torch.long)
    out_pos = torch.zeros((B, L), dtype=torch.long)
    out_seg = torch.zeros((B, L), dtype=torch.long)
    out_attn = torch.eye(L, dtype=torch.bool).repeat(B, 1, 1)
    out_w = torch.ones((B, L)) if any(r.weights is not None for r in rows) else None
    b = 0
    for r in rows:
        n, t = r.input_ids.shape
        sl = (slice(b, b + n), slice(0, t))
        out_ids[sl], out_tg[sl] = r.input_ids, r.targets
        out_src[sl], out_tsrc[sl] = r.source_index, r.target_source
        out_pos[sl] = r.position_ids if r.position_ids is not None else torch.arange(t)
        if r.segment_ids is not None:
            out_seg[sl] = r.segment_ids
        if r.weights is not None:
            out_w[sl] = r.weights
        out_attn[b:b + n, :t, :t] = attention_matrix(r.attn, r.input_ids)
        b += n
    return ObjectiveBatch(out_ids, out_tg, out_attn, out_src, out_tsrc, out_pos, out_seg, weights=out_w)


def with_cls(blocks: torch.Tensor, cls_id: int) -> torch.Tensor:
    """Prepend ``[CLS]`` to every row: every input the encoder sees starts with it."""
    return torch.cat([blocks.new_full((blocks.shape[0], 1), cls_id), blocks], dim=1)  # rows may be empty
