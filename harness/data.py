"""Everything a run needs from its data config: tokenizer, vocabulary and token blocks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from objbench.harness.blocks import cached_blocks
from objbench.harness.config import DataConfig
from objbench.harness.corpora import corpus_fingerprint, load_corpus
from objbench.harness.errors import ConfigError, DataError
from objbench.harness.tokenizer import build_tokenizer, load_tokenizer_file, vocab_of
from objbench.objectives.base import Vocab, special_tokens


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    tokenizer_path: Path
    vocab: Vocab
    train: np.ndarray  # (N, block_size) uint16, memory-mapped (in memory when capped)
    validation: np.ndarray
    corpus_hash: str
    tokenizer_hash: str

    def capped(self, unique_tokens: int | None, min_train_blocks: int = 1) -> "PreparedData":
        """The same data with the training split cut to a prefix of whole documents of at most
        ``unique_tokens`` tokens (None: all of it), holding at least one batch of blocks;
        validation is never capped."""
        data = self if unique_tokens is None else replace(
            self, train=cap_documents(self.train, unique_tokens, self.vocab["[SEP]"]))
        if len(data.train) < min_train_blocks:
            what = "corpus" if unique_tokens is None else f"data.unique_tokens={unique_tokens}"
            raise DataError(
                f"{what} yields {len(data.train)} training blocks of {self.train.shape[1]} tokens, "
                f"fewer than one batch ({min_train_blocks}); use more text, a smaller "
                f"data.block_size or a smaller train.batch_size")
        return data


def cap_documents(train: np.ndarray, unique_tokens: int, sep_id: int) -> np.ndarray:
    """The longest prefix of whole training documents holding at most ``unique_tokens`` tokens,
    packed into blocks again (the packed split is the documents in order, each ended by
    ``[SEP]``; the incomplete last block is dropped, as for the whole split)."""
    stream, block_size = np.asarray(train).ravel(), train.shape[1]
    if unique_tokens >= len(stream):
        raise ConfigError(f"data.unique_tokens={unique_tokens} is not below the training split's "
                          f"{len(stream)} tokens: leave it unset to use all of them")
    ends = np.flatnonzero(stream[:unique_tokens] == sep_id)
    if len(ends) == 0 or ends[-1] + 1 < block_size:
        raise ConfigError(f"data.unique_tokens={unique_tokens} holds no whole document and block "
                          f"(the first document ends at token {int(np.argmax(stream == sep_id)) + 1}, "
                          f"blocks hold {block_size}); raise it")
    kept = stream[: (ends[-1] + 1) // block_size * block_size]
    return np.ascontiguousarray(kept.reshape(-1, block_size))


def prepare_data(cfg: DataConfig, min_train_blocks: int = 1) -> PreparedData:
    specials = special_tokens(cfg.special_tokens)
    corpus = load_corpus(cfg.corpus, validation_fraction=cfg.validation_fraction)
    corpus_hash = corpus_fingerprint(corpus)
    if cfg.tokenizer_file:
        tok = load_tokenizer_file(cfg.tokenizer_file, specials)
        path = Path(cfg.tokenizer_file)
    else:
        tok, path = build_tokenizer(corpus["train"], corpus_hash, cfg.tokenizer, cfg.vocab_size, specials)
    tok_hash = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    sep = tok.token_to_id("[SEP]")
    key = f"{corpus_hash[:16]}-{tok_hash}"
    train = cached_blocks(corpus["train"], tok, key, "train", cfg.block_size, sep)
    val = cached_blocks(corpus["validation"], tok, key, "validation", cfg.block_size, sep)
    if len(val) == 0:
        raise DataError(f"corpus {cfg.corpus!r}: the validation split holds less than one block of "
                        f"{cfg.block_size} tokens; raise data.validation_fraction or add text")
    data = PreparedData(tok, path, vocab_of(tok, specials), train, val, corpus_hash, tok_hash)
    return data.capped(cfg.unique_tokens, min_train_blocks)
