"""Token blocks: the corpus tokenized once, packed to a fixed length, memory-mapped.

Documents are joined with ``[SEP]`` and cut into rows of ``block_size`` tokens; the
incomplete tail is dropped. Blocks are keyed by (tokenizer, corpus, block size), never
re-tokenized per step, and checked against their recorded sha256 when first opened in a
process (`cached_entry`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import Dataset
from objbench.harness.integrity import cached_entry
from objbench.harness.progress import progress_bar
from objbench.harness.sources import cache_dir
from tokenizers import Tokenizer


def pack(ds: Dataset, tok: Tokenizer, block_size: int, sep_id: int, desc: str = "") -> np.ndarray:
    """Tokenize every document in batches and pack into ``(N, block_size)`` uint16 rows."""
    pieces: list[np.ndarray] = []
    sep = np.array([sep_id], dtype=np.uint16)
    with progress_bar(total=len(ds), desc=f"tokenizing {desc}", unit="doc", leave=False) as bar:
        for batch in ds.iter(batch_size=1000):
            for enc in tok.encode_batch(batch["text"], add_special_tokens=False):
                pieces.append(np.asarray(enc.ids, dtype=np.uint16))
                pieces.append(sep)
            bar.update(len(batch["text"]))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)
    n = len(stream) // block_size
    return stream[: n * block_size].reshape(n, block_size)


def cached_blocks(ds: Dataset, tok: Tokenizer, tok_key: str, split: str, block_size: int,
                  sep_id: int) -> np.ndarray:
    """Blocks for one split, built once, verified, then memory-mapped from the cache."""
    def build(path: Path) -> None:
        with path.open("wb") as f:
            np.save(f, pack(ds, tok, block_size, sep_id, desc=split))

    path = cached_entry(cache_dir() / "blocks" / f"{tok_key}-{split}-{block_size}.npy", build)
    return np.load(path, mmap_mode="r")


def batch_rows(n_blocks: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Row indices of the global batch at ``step``: a fresh permutation each epoch, from the seed.

    A pure function of (step, seed): resuming needs no loader state, and every rank agrees.
    """
    per_epoch = n_blocks // batch_size
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_blocks)
    return perm[k * batch_size:(k + 1) * batch_size]



class SeenBlocks:
    """The distinct training blocks a run's global batches have held so far (the unique data it
    has seen), replayed from the seed like `batch_rows`, so a resumed run counts the same."""

    def __init__(self, n_blocks: int, batch_size: int, seed: int, steps: int = 0) -> None:
        self.n_blocks, self.batch_size, self.seed = n_blocks, batch_size, seed
        self.seen = np.zeros(n_blocks, dtype=bool)
        per_epoch = n_blocks // batch_size
        epochs, rest = divmod(steps, per_epoch)
        for epoch in range(epochs):  # whole epochs at once; once every block is seen, none is new
            self.seen[self._permutation(epoch)[: per_epoch * batch_size]] = True
            if self.seen.all():
                break
        for step in range(epochs * per_epoch, steps):
            self.add(step)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)

    def add(self, step: int) -> None:
        """Count the blocks of the global batch at ``step``."""
        self.seen[batch_rows(self.n_blocks, self.batch_size, step, self.seed)] = True

    @property
    def count(self) -> int:
        return int(self.seen.sum())
