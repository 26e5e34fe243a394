"""Reading a trained run: features and sentence scores, by the objective's own rules.

Probe tasks go through this module only. The objective says which attention to use for
features, which position pools a sentence, and how a sentence is scored, so no task ever
special-cases an objective's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from objbench.harness import checkpoint as ckpt
from objbench.harness.config import RunConfig, load_yaml, validate
from objbench.harness.errors import CheckpointError, DamagedCheckpoint
from objbench.harness.integrity import file_digest
from objbench.harness.model import Encoder
from objbench.harness.tokenizer import vocab_of
from objbench.harness.trainer import build_objective, pick_device
from objbench.objectives.base import IGNORE, Objective, attention_matrix, collate, special_tokens

Text = str | tuple[str, str]  # a sentence, or a pair read as [CLS] A [SEP] B [SEP]


@dataclass
class Inputs:
    """A padded batch ready for the encoder, with where to pool each row."""

    input_ids: torch.Tensor
    attn: torch.Tensor
    segment_ids: torch.Tensor
    lengths: torch.Tensor
    pool_index: torch.Tensor  # position pooled for the sentence representation


class TrainedModel:
    """A run's model at one checkpoint, with its tokenizer and objective."""

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
            self.model = Encoder(self.cfg.model, self.vocab.size)
            ckpt.restore(self.checkpoint, self.model)
        except DamagedCheckpoint as exc:
            raise ckpt.for_reader(exc, self.run_dir, asked=checkpoint is not None) from None
        self.device = pick_device(self.cfg)
        self.objective: Objective = build_objective(self.cfg, self.vocab)
        self.model.to(self.device).eval()
        self.max_tokens = self.cfg.model.max_len // 2 - 2  # room for specials and infill rows

    # -- inputs ---------------------------------------------------------------------------
    def ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids[: self.max_tokens]

    def inputs(self, texts: list[Text]) -> Inputs:
        """``[CLS] A`` or ``[CLS] A [SEP] B [SEP]``, padded, under the reading attention."""
        v = self.vocab
        rows, segs = [], []
        for t in texts:
            if isinstance(t, str):
                ids = [v["[CLS]"], *self.ids(t)]
                seg = [0] * len(ids)
            else:
                a, b = self.ids(t[0]), self.ids(t[1])
                ids = [v["[CLS]"], *a, v["[SEP]"], *b, v["[SEP]"]]
                seg = [0] * (len(a) + 2) + [1] * (len(b) + 1)
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
        pool = torch.zeros_like(lengths) if self.objective.pooling == "cls" else lengths - 1
        return Inputs(ids, attn, seg, lengths, pool)

    # -- features -------------------------------------------------------------------------
    @torch.no_grad()
    def sentence_features(self, texts: list[Text], batch_size: int = 64, desc: str = "") -> np.ndarray:
        """Pooled features ``(N, n_layers + 1, d_model)``: index 0 is the embedding layer."""
        out = np.zeros((len(texts), self.cfg.model.n_layers + 1, self.cfg.model.d_model), np.float32)
        order = np.argsort([len(t) if isinstance(t, str) else len(t[0]) + len(t[1]) for t in texts])
        for start in tqdm(range(0, len(texts), batch_size), desc=desc or "features", leave=False):
            idx = order[start:start + batch_size]
            x = self.inputs([texts[i] for i in idx])
            layers = self._layers(x)
            rows = torch.arange(len(idx))
            out[idx] = torch.stack([h[rows, x.pool_index] for h in layers], 1).float().cpu().numpy()
        return out

    @torch.no_grad()
    def word_features(self, sentences: list[list[str]], batch_size: int = 64) -> list[np.ndarray]:
        """Per-word features ``(n_words, n_layers + 1, d_model)`` from each word's first sub-token.

        Words past the model's length limit are dropped from the end; callers align labels by
        the returned lengths.
        """
        out: list[np.ndarray] = []
        for start in tqdm(range(0, len(sentences), batch_size), desc="word features", leave=False):
            chunk = sentences[start:start + batch_size]
            rows, firsts = [], []
            for words in chunk:
                enc = self.tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False)
                ids = enc.ids[: self.max_tokens]
                seen, first = set(), []
                for pos, w in enumerate(enc.word_ids[: len(ids)]):
                    if w is not None and w not in seen:
                        seen.add(w)
                        first.append(pos + 1)  # +1 for [CLS]
                rows.append([self.vocab["[CLS]"], *ids])
                firsts.append(first)
            x = self._pad(rows, [[0] * len(r) for r in rows])
            layers = torch.stack(self._layers(x), 2).float().cpu().numpy()  # (B, T, L+1, D)
            out.extend(layers[i, f] for i, f in enumerate(firsts))
        return out

    def _layers(self, x: Inputs) -> list[torch.Tensor]:
        dev = self.device
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            return self.model(x.input_ids.to(dev), x.attn.to(dev), None, x.segment_ids.to(dev),
                              all_layers=True)

    # -- scores ---------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, sentences: list[str], max_rows: int = 256, desc: str = "scoring") -> tuple[np.ndarray, np.ndarray]:
        """Each sentence's log-probability (fp32) by the objective's rule, and its token count.

        The rows of many sentences (e.g. one masked copy per token for pseudo-log-likelihood)
        are packed into batches of up to ``max_rows``: never one forward pass per token.
        """
        totals = np.zeros(len(sentences), np.float64)
        counts = np.zeros(len(sentences), np.int64)
        pending, n_rows = [], 0

        def flush() -> None:
            nonlocal pending, n_rows
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
            row_of = torch.nonzero(keep.cpu(), as_tuple=True)[0]
            np.add.at(totals, owner[row_of].numpy(), picked.numpy())
            np.add.at(counts, owner[row_of].numpy(), 1)
            pending, n_rows = [], 0

        for i, s in enumerate(tqdm(sentences, desc=desc, leave=False)):
            ids = self.ids(s)
            if not ids:
                raise ValueError(f"sentence {i} has no tokens: {s!r}")
            rows = self.objective.score_rows(torch.tensor(ids))
            if n_rows + rows.input_ids.shape[0] > max_rows:
                flush()
            pending.append((i, rows))
            n_rows += rows.input_ids.shape[0]
        flush()
        return totals, counts
