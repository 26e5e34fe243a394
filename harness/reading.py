"""Reading a trained run: features and sentence scores, by the objective's own rules.

Probe tasks go through this module only. The objective says which attention to use for
features, how a sentence is pooled, how a sentence is scored (and whether it can be), and how
long a sentence may be, so no task ever special-cases an objective's name.

Every reader here cuts a sentence to `TrainedModel.max_tokens` and refuses one with no tokens
(`EmptyInputError`). Counting what was cut, and skipping instead of cutting, is the task's
side: `objbench.tasks.admission.Admission` sees every input once before it is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from tokenizers import Encoding, Tokenizer

from objbench.harness import checkpoint as ckpt
from objbench.harness.config import RunConfig, load_yaml, validate
from objbench.harness.errors import CheckpointError, DamagedCheckpoint, EmptyInputError, ScoringNotApplicable
from objbench.harness.integrity import file_digest
from objbench.harness.model import Encoder
from objbench.harness.progress import progress_bar
from objbench.harness.tokenizer import vocab_of
from objbench.harness.trainer import Trainer, build_modules, build_objective, pick_device
from objbench.objectives.base import (IGNORE, Objective, ObjectiveBatch, Pooling, attention_matrix, collate,
                                      special_tokens)

Text = str | tuple[str, str]  # a sentence, or a pair read as [CLS] A [SEP] B [SEP]
T = TypeVar("T")


@dataclass
class Inputs:
    """A padded batch ready for the encoder, with how to pool each row."""

    input_ids: torch.Tensor
    attn: torch.Tensor
    segment_ids: torch.Tensor
    lengths: torch.Tensor
    pooling: Pooling  # the objective's declared pooling

    def pool(self, hidden: torch.Tensor, how: Pooling | None = None) -> torch.Tensor:
        """One vector per row from states ``(B, T, ...)``: at ``[CLS]``, at the last token, or
        the mean over the text tokens (``[CLS]`` and padding excluded); ``how`` defaults to the
        declared pooling."""
        how = how or self.pooling
        lengths = self.lengths.to(hidden.device)
        if how == "cls":
            return hidden[:, 0]
        if how == "last":
            return hidden[torch.arange(len(lengths), device=hidden.device), lengths - 1]
        pos = torch.arange(hidden.shape[1], device=hidden.device)
        text = ((pos >= 1) & (pos < lengths[:, None])).to(hidden.dtype)
        text = text.view(*text.shape, *([1] * (hidden.dim() - 2)))
        return (hidden * text).sum(1) / text.sum(1).clamp(min=1)


@dataclass
class WordFeatures:
    """One sentence's word features, and which word each row reads.

    ``features[k]`` ``(n_layers + 1, d_model)`` reads word ``word_index[k]`` of the sentence at
    its first sub-token. A word with no sub-token (empty, whitespace, characters the normaliser
    removes) and a word past the length limit have no row, so labels align as
    ``labels[word_index]``, never by count.
    """

    features: np.ndarray
    word_index: np.ndarray  # (n_rows,) int, increasing

    def align(self, per_word: Sequence[T]) -> list[T]:
        """The entries of a per-word sequence (words, labels) that have a row, in row order."""
        return [per_word[i] for i in self.word_index]


class TrainedModel:
    """A run's model at one checkpoint, with its tokenizer and objective, read by the objective's
    rules: `sentence_features`, `word_features`, `score`, and `inputs` for fine-tuning. Every
    reader cuts a sentence to `max_tokens` and raises `EmptyInputError` on one with no tokens."""

    def __init__(self, run_dir: Path, checkpoint: Path | None = None, device: str = "auto") -> None:
        self.run_dir = Path(run_dir)
        cfg_path, tokenizer_path = self.run_dir / "config.yaml", self.run_dir / "tokenizer.json"
        if not (cfg_path.exists() and tokenizer_path.exists()):
            raise CheckpointError(f"{self.run_dir} is not an objbench run (no config.yaml or "
                                  f"tokenizer.json)")
        self.cfg: RunConfig = validate(RunConfig, load_yaml(cfg_path), str(cfg_path))
        trained_with = self.cfg.to_dict()  # before the device override below, a reading choice
        if device != "auto":
            self.cfg = self.cfg.model_copy(update={"train": self.cfg.train.model_copy(update={"device": device})})
        found = ckpt.checkpoints(self.run_dir)
        self.checkpoint = checkpoint or (found[-1] if found else None)
        if self.checkpoint is None:
            raise CheckpointError(f"{self.run_dir} has no complete checkpoint; train it first")
        try:  # the checkpoint must be intact and trained with this config.yaml and tokenizer.json
            state = ckpt.load_state(self.checkpoint)
            ckpt.check_config(self.checkpoint, state, trained_with, file_digest(tokenizer_path)[:16],
                              cfg_path.name, f"restore {cfg_path} and {tokenizer_path.name} as "
                              f"training wrote them (the checkpoint's config is in its state.json)")
            self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
            self.vocab = vocab_of(self.tokenizer, special_tokens(self.cfg.data.special_tokens))
            self.objective: Objective = build_objective(self.cfg, self.vocab)
            self.model = Encoder(self.cfg.model, self.vocab.size)
            #: the objective's own modules (ELECTRA's generator), read with the encoder
            self.objective_modules = build_modules(self.objective, self.cfg.model, self.vocab.size)
            ckpt.restore(self.checkpoint, self.model, modules=self.objective_modules)
        except DamagedCheckpoint as exc:
            raise ckpt.for_reader(exc, self.run_dir, asked=checkpoint is not None) from None
        self.device = pick_device(self.cfg)
        self._ready()

    @classmethod
    def from_trainer(cls, trainer: Trainer) -> TrainedModel:
        """The model a `Trainer` holds after ``run()``, read in memory: its weights are those of
        the run's newest checkpoint, so nothing is rebuilt or read back from disk."""
        self = cls.__new__(cls)
        self.run_dir, self.cfg, self.checkpoint = trainer.out, trainer.cfg, ckpt.checkpoints(trainer.out)[-1]
        self.tokenizer, self.vocab = trainer.data.tokenizer, trainer.data.vocab
        self.model, self.objective, self.device = trainer.model, trainer.objective, trainer.device
        self.objective_modules = trainer.objective_modules
        self._ready()
        return self

    def _ready(self) -> None:
        self.model.to(self.device).eval()
        self.objective_modules.to(self.device).eval()
        max_len = self.cfg.model.max_len
        #: the longest sentence read (tokens after [CLS]), for features and scores alike: the
        #: objective's declared limit, and never past the position table with [CLS] in front
        self.max_tokens = min(self.objective.max_tokens(max_len), max_len - 1)

    # -- inputs ---------------------------------------------------------------------------
    def tokens(self, text: str) -> list[int]:
        """All of ``text``'s token ids, without specials and uncut."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def ids(self, text: str) -> list[int]:
        """``text``'s token ids as read: cut to `max_tokens`."""
        return self.tokens(text)[: self.max_tokens]

    def pair_ids(self, first: str, second: str) -> tuple[list[int], list[int]]:
        """A pair's token ids as read: the longer sentence loses its last token until
        ``A [SEP] B [SEP]`` holds at most `max_tokens` tokens."""
        a, b = self.tokens(first), self.tokens(second)
        while (a or b) and len(a) + len(b) + 2 > self.max_tokens:
            if len(a) >= len(b):
                a = a[:-1]
            else:
                b = b[:-1]
        return a, b

    def encode_words(self, words: Sequence[str]) -> Encoding:
        """A pre-split sentence's tokens (uncut); ``word_ids`` names each token's word."""
        return self.tokenizer.encode(list(words), is_pretokenized=True, add_special_tokens=False)

    def length(self, text: Text) -> int:
        """Tokens ``text`` puts after ``[CLS]`` before any cut (a pair's two ``[SEP]`` included);
        0 when there is nothing to read: the sentence, or either sentence of a pair, is empty."""
        if isinstance(text, str):
            return len(self.tokens(text))
        a, b = (len(self.tokens(t)) for t in text)
        return a + b + 2 if a and b else 0

    def inputs(self, texts: Sequence[Text]) -> Inputs:
        """``[CLS] A`` or ``[CLS] A [SEP] B [SEP]``, padded, under the reading attention."""
        v = self.vocab
        rows, segs = [], []
        for t in texts:
            if isinstance(t, str):
                ids = [v["[CLS]"], *self.ids(t)]
                seg = [0] * len(ids)
                empty = len(ids) == 1
            else:
                a, b = self.pair_ids(*t)
                ids = [v["[CLS]"], *a, v["[SEP]"], *b, v["[SEP]"]]
                seg = [0] * (len(a) + 2) + [1] * (len(b) + 1)
                empty = not (a and b)
            if empty:
                raise EmptyInputError(f"{t!r} has no tokens after tokenisation: nothing to read")
            rows.append(ids)
            segs.append(seg)
        return self._pad(rows, segs)

    def _pad(self, rows: list[list[int]], segs: list[list[int]]) -> Inputs:
        L = max(map(len, rows))
        ids = torch.full((len(rows), L), self.vocab["[PAD]"], dtype=torch.long)
        seg = torch.zeros((len(rows), L), dtype=torch.long)
        for i, (r, s) in enumerate(zip(rows, segs)):
            ids[i, : len(r)] = torch.tensor(r)
            seg[i, : len(s)] = torch.tensor(s)
        lengths = torch.tensor([len(r) for r in rows])
        keys = torch.arange(L)[None] < lengths[:, None]
        attn = attention_matrix(self.objective.reading_attention, ids) & keys[:, None, :]
        attn = attn | torch.eye(L, dtype=torch.bool)  # padded rows attend to themselves
        return Inputs(ids, attn, seg, lengths, self.objective.pooling)

    # -- features -------------------------------------------------------------------------
    @torch.no_grad()
    def sentence_features(self, texts: list[Text], batch_size: int = 64, desc: str = "") -> np.ndarray:
        """Pooled features ``(N, n_layers + 1, d_model)``: index 0 is the embedding layer."""
        out = np.zeros((len(texts), self.cfg.model.n_layers + 1, self.cfg.model.d_model), np.float32)
        order = np.argsort([len(t) if isinstance(t, str) else len(t[0]) + len(t[1]) for t in texts])
        for start in progress_bar(range(0, len(texts), batch_size), desc=desc or "features", leave=False):
            idx = order[start:start + batch_size]
            x = self.inputs([texts[i] for i in idx])
            layers = self._layers(x)
            out[idx] = torch.stack([x.pool(h) for h in layers], 1).float().cpu().numpy()
        return out

    @torch.no_grad()
    def word_features(self, sentences: Sequence[Sequence[str]], batch_size: int = 64,
                      layers: Sequence[int] | None = None) -> list[WordFeatures]:
        """Each pre-split sentence's words read at their first sub-token, cut to `max_tokens`;
        at every layer, or at ``layers`` only (``WordFeatures.features`` then holds those)."""
        out: list[WordFeatures] = []
        for start in progress_bar(range(0, len(sentences), batch_size), desc="word features", leave=False):
            chunk = sentences[start:start + batch_size]
            rows, read = [], []
            for words in chunk:
                enc = self.encode_words(words)
                if not enc.ids:
                    raise EmptyInputError(f"sentence {list(words)!r}: no word has a token: nothing to read")
                ids = enc.ids[: self.max_tokens]
                first: dict[int, int] = {}  # word -> its first sub-token's position (+1 for [CLS])
                for pos, word in enumerate(enc.word_ids[: len(ids)]):
                    if word is not None:
                        first.setdefault(word, pos + 1)
                rows.append([self.vocab["[CLS]"], *ids])
                read.append(first)
            x = self._pad(rows, [[0] * len(r) for r in rows])
            every = self._layers(x)
            states = torch.stack([every[k] for k in layers] if layers is not None else every, 2)
            states = states.float().cpu().numpy()  # (B, T, layers, D)
            out.extend(WordFeatures(states[i, list(first.values())], np.array(list(first), dtype=np.int64))
                       for i, first in enumerate(read))
        return out

    def _layers(self, x: Inputs) -> list[torch.Tensor]:
        dev = self.device
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            return self.model(x.input_ids.to(dev), x.attn.to(dev), None, x.segment_ids.to(dev),
                              all_layers=True)

    # -- scores ---------------------------------------------------------------------------
    def _add_scores(self, pending: list[tuple[int, ObjectiveBatch]], totals: np.ndarray) -> None:
        """Add each sentence's weighted target log-probabilities to ``totals``, one forward pass
        over the scoring rows of all ``(sentence index, rows)`` in ``pending``: per sentence
        when ``totals`` is ``(sentences,)``, per token (the clean index each target predicts)
        when it is ``(sentences, tokens)``."""
        if not pending:
            return
        batch = collate([r for _, r in pending], self.vocab["[PAD]"])
        owner = torch.cat([torch.full((r.input_ids.shape[0],), i) for i, r in pending])
        b = batch.to(self.device)
        keep = b.targets != IGNORE  # pseudo-log-likelihood rows have one target each:
        # the last block then computes one position per row (``at``)
        hidden = self.model(b.input_ids, b.attn, b.position_ids, b.segment_ids, at=keep).float()
        logp = torch.log_softmax(self.model.logits(hidden).float(), -1)
        picked = logp.gather(1, b.targets[keep][:, None])[:, 0].double().cpu()
        if batch.weights is not None:
            picked = picked * batch.weights[keep.cpu()].double()
        row_of = torch.nonzero(keep.cpu(), as_tuple=True)[0]
        where = owner[row_of].numpy()
        if totals.ndim == 2:
            where = (where, batch.target_source[keep.cpu()].numpy())
        np.add.at(totals, where, picked.numpy())

    def scorer(self, variant: str | None = None) -> Objective:
        """The objective whose score rows score sentences: the run's own, or the same objective
        scoring by ``variant``, one of its ``score_variants`` (e.g. ``pll-word-l2r``)."""
        if self.objective.score_kind == "none":
            raise ScoringNotApplicable(f"objective {self.cfg.objective!r} has no sentence score; "
                                       f"zero-shot tasks record scoring_not_applicable for it")
        return self.objective if variant is None else self.objective.scoring(variant)

    @torch.no_grad()
    def score(self, sentences: list[str], max_rows: int = 256, desc: str = "scoring",
              variant: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each sentence's score (fp32) by the objective's rule (or its score ``variant``), and
        its token count.

        The score is the log-probability, exact or not as ``objective.score_kind`` says (a
        pseudo-log-likelihood, or a weighted sum estimating a bound); an objective whose kind
        is ``"none"`` raises `ScoringNotApplicable`. The rows of many sentences (e.g. one
        masked copy per token for pseudo-log-likelihood) are packed into batches of up to
        ``max_rows``: never one forward pass per token.
        """
        totals = np.zeros(len(sentences), np.float64)
        counts = self._score_into(totals, sentences, max_rows, desc, variant)
        return totals, counts

    @torch.no_grad()
    def token_scores(self, sentences: list[str], max_rows: int = 256, desc: str = "scoring",
                     variant: str | None = None) -> list[np.ndarray]:
        """Each sentence's per-token log-probabilities, in the order of its tokens as read
        (`ids`), by the same rows as `score`: they sum to the sentence's score. A bound's token
        holds its share of the estimate."""
        totals = np.zeros((len(sentences), self.max_tokens), np.float64)
        counts = self._score_into(totals, sentences, max_rows, desc, variant)
        return [row[:n] for row, n in zip(totals, counts)]

    def _score_into(self, totals: np.ndarray, sentences: list[str], max_rows: int, desc: str,
                    variant: str | None) -> np.ndarray:
        """Score every sentence into ``totals`` (see `_add_scores`); each one's token count."""
        objective = self.scorer(variant)
        counts = np.zeros(len(sentences), np.int64)

        def rows() -> Iterator[tuple[int, ObjectiveBatch]]:
            for i, s in enumerate(progress_bar(sentences, desc=desc, leave=False)):
                ids = self.ids(s)
                if not ids:
                    raise EmptyInputError(f"sentence {i} has no tokens after tokenisation: {s!r}")
                counts[i] = len(ids)
                yield i, objective.score_rows(torch.tensor(ids))
        self._packed(rows(), totals, max_rows)
        return counts

    def _packed(self, rows: Iterable[tuple[int, ObjectiveBatch]], totals: np.ndarray, max_rows: int) -> None:
        """Score ``(index, rows)`` into ``totals``, up to ``max_rows`` rows per forward pass: the
        rows of many sentences share one pass, never one pass per token."""
        pending: list[tuple[int, ObjectiveBatch]] = []
        for i, batch in rows:
            if sum(r.input_ids.shape[0] for _, r in pending) + batch.input_ids.shape[0] > max_rows:
                self._add_scores(pending, totals)
                pending = []
            pending.append((i, batch))
        self._add_scores(pending, totals)

    @torch.no_grad()
    def target_scores(self, sequences: Sequence[Sequence[int]], targets: Sequence[int],
                      max_rows: int = 256, desc: str = "target scores", variant: str | None = None) -> np.ndarray:
        """The log-probability of one token per sequence, by the objective's own scoring rows.

        ``sequences`` are token ids without specials (already cut: nothing here shortens them)
        and ``targets[i]`` is the index of the scored token in ``sequences[i]``. Of the rows
        `Objective.score_rows` builds for the sequence, only those predicting that token are
        run, and only at it: the weighted log-probabilities of the targets whose
        ``target_source`` is that index, summed. For an exact or pseudo score that is the
        token's one term of the sentence score; for a bound, the token's share of the estimate.
        ``variant`` is one of the objective's score variants, as in `score`.
        """
        objective = self.scorer(variant)
        totals = np.zeros(len(sequences), np.float64)
        pairs = progress_bar(list(zip(sequences, targets)), desc=desc, leave=False)
        rows = ((i, self._rows_for(objective, ids, target)) for i, (ids, target) in enumerate(pairs))
        # None: a bound's draws left the token unmasked, so it has no share in the estimate
        self._packed(((i, r) for i, r in rows if r is not None), totals, max_rows)
        return totals

    def _rows_for(self, objective: Objective, ids: Sequence[int], target: int) -> ObjectiveBatch | None:
        """The scoring rows of ``ids`` that predict token ``target``, every other target dropped
        (None when no row does)."""
        if not 0 <= target < len(ids):
            raise ValueError(f"target index {target} outside a sequence of {len(ids)} tokens")
        rows = objective.score_rows(torch.tensor(list(ids)))
        hits = rows.target_source == target
        pad = self.vocab["[PAD]"]
        kept = [rows.row(b, pad) for b in torch.nonzero(hits.any(1), as_tuple=True)[0].tolist()]
        for row in kept:
            row.targets = torch.where(row.target_source == target, row.targets, IGNORE)
        return collate(kept, pad) if kept else None
