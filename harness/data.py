"""Everything a run needs from its data config: tokenizer, vocabulary and token blocks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from objbench.harness.blocks import cached_blocks
from objbench.harness.config import DataConfig
from objbench.harness.corpora import corpus_fingerprint, load_corpus
from objbench.harness.errors import DataError
from objbench.harness.tokenizer import build_tokenizer, load_tokenizer_file, vocab_of
from objbench.objectives.base import Vocab, special_tokens


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    tokenizer_path: Path
    vocab: Vocab
    train: np.ndarray  # (N, block_size) uint16, memory-mapped
    validation: np.ndarray
    corpus_hash: str
    tokenizer_hash: str


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
    if len(train) < min_train_blocks:
        raise DataError(
            f"corpus {cfg.corpus!r} yields {len(train)} training blocks of {cfg.block_size} tokens, "
            f"fewer than one batch ({min_train_blocks}); use more text, a smaller "
            f"data.block_size or a smaller train.batch_size")
    if len(val) == 0:
        raise DataError(f"corpus {cfg.corpus!r}: the validation split holds less than one block of "
                        f"{cfg.block_size} tokens; raise data.validation_fraction or add text")
    return PreparedData(tok, path, vocab_of(tok, specials), train, val, corpus_hash, tok_hash)
