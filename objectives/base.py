"""The objective contract.

An objective turns clean token blocks into what the shared encoder sees and what it must
predict. It never touches the model, optimizer or data loader, and draws all randomness
from the ``torch.Generator`` it is handed.

Target convention (stated once, used everywhere): ``targets[b, i]`` is the token that the
hidden state at position ``i`` must predict, or ``IGNORE``. Nobody shifts later.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict

IGNORE = -100
BASE_SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")


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


@dataclass
class ObjectiveBatch:
    """What the encoder sees and must predict, plus the provenance the leakage tests need.

    ``source_index[b, i]`` is the index in the clean block whose token position ``i`` shows
    (-1 when it shows none: specials, ``[MASK]``, a random replacement). ``target_source`` is
    the clean index of the token predicted at ``i`` (-1 for specials such as ``[E]``).
    """

    input_ids: torch.Tensor
    targets: torch.Tensor
    attn: str | torch.Tensor  # "bidirectional" | "causal" | bool (B, T, T), True = may attend
    source_index: torch.Tensor
    target_source: torch.Tensor
    position_ids: torch.Tensor | None = None
    segment_ids: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "ObjectiveBatch":
        move = lambda t: t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t
        return replace(self, **{f: move(getattr(self, f)) for f in
                                ("input_ids", "targets", "attn", "source_index", "target_source",
                                 "position_ids", "segment_ids")})

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())


class Objective(ABC):
    """A pre-training objective. Subclasses set the class variables and implement two methods.

    Reading rules (``reading_attention``, ``pooling``) tell probe tasks how to extract
    features from a model trained with this objective, so no task ever special-cases an
    objective's name.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[Options]] = Options
    special_tokens: ClassVar[tuple[str, ...]] = ()  # needed beyond BASE_SPECIALS
    #: does any target legitimately see its own clean token? (BERT's "keep" replacements)
    sees_own_target: ClassVar[bool] = False

    reading_attention: Literal["bidirectional", "causal"] = "bidirectional"
    pooling: Literal["cls", "last"] = "cls"
    score_method: str = ""  # one line: how ``score_rows`` scores a sentence

    def __init__(self, options: Options, vocab: Vocab) -> None:
        self.options = options
        self.vocab = vocab

    @abstractmethod
    def make_batch(self, blocks: torch.Tensor, gen: torch.Generator) -> ObjectiveBatch:
        """Training batch from clean blocks ``(B, T)`` of token ids (no specials added yet)."""

    @abstractmethod
    def score_rows(self, tokens: torch.Tensor) -> ObjectiveBatch:
        """Rows whose target log-probabilities sum to the sentence's score.

        ``tokens`` is one sentence ``(n,)`` without specials. Every one of the sentence's
        ``n`` tokens must be a target exactly once across the rows, with ``target_source`` its
        index, so summed and length-normalised scores are comparable across objectives.
        """

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
    """The bool ``(B, T, T)`` form of any attention pattern."""
    B, T = input_ids.shape
    if isinstance(attn, torch.Tensor):
        return attn
    full = torch.ones(T, T, dtype=torch.bool, device=input_ids.device)
    m = full if attn == "bidirectional" else torch.tril(full)
    return m.expand(B, T, T)


def collate(rows: list[ObjectiveBatch], pad_id: int) -> ObjectiveBatch:
    """Pad batches of different lengths into one; padded positions attend only to themselves."""
    L = max(r.input_ids.shape[1] for r in rows)
    B = sum(r.input_ids.shape[0] for r in rows)
    out_ids = torch.full((B, L), pad_id, dtype=torch.long)
    out_tg = torch.full((B, L), IGNORE, dtype=torch.long)
    out_src = torch.full((B, L), -1, dtype=torch.long)
    out_tsrc = torch.full((B, L), -1, dtype=torch.long)
    out_pos = torch.zeros((B, L), dtype=torch.long)
    out_seg = torch.zeros((B, L), dtype=torch.long)
    out_attn = torch.eye(L, dtype=torch.bool).repeat(B, 1, 1)
    b = 0
    for r in rows:
        n, t = r.input_ids.shape
        sl = (slice(b, b + n), slice(0, t))
        out_ids[sl], out_tg[sl] = r.input_ids, r.targets
        out_src[sl], out_tsrc[sl] = r.source_index, r.target_source
        out_pos[sl] = r.position_ids if r.position_ids is not None else torch.arange(t)
        if r.segment_ids is not None:
            out_seg[sl] = r.segment_ids
        out_attn[b:b + n, :t, :t] = attention_matrix(r.attn, r.input_ids)
        b += n
    return ObjectiveBatch(out_ids, out_tg, out_attn, out_src, out_tsrc, out_pos, out_seg)


def with_cls(blocks: torch.Tensor, cls_id: int) -> torch.Tensor:
    """Prepend ``[CLS]`` to every row: every input the encoder sees starts with it."""
    return torch.cat([torch.full_like(blocks[:, :1], cls_id), blocks], dim=1)
