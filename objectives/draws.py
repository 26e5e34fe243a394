"""Random draws made row by row, so a row's masks never depend on which rows share its batch.

The trainer hands ``make_batch`` a `RowGenerator`: a ``torch.Generator`` for the whole
micro-batch that also holds one generator per row, seeded by (run seed, step, the row's index
in the global batch). Draws through `rand`, `randint` and `row` take each row's numbers from
that row's own generator, so one process, several processes under torchrun and gradient
accumulation draw the same masks and train the same model. With a plain ``torch.Generator``
(tests, validation batches) they draw from it as ``torch.rand`` would.

An objective that draws from ``gen`` directly still works: its masks then depend on how the
global batch is split over processes and micro-batches, as they did before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class RowGenerator(torch.Generator):
    """A generator for a batch that also carries one generator per row (``rows[r]``), each
    row's place in the global batch (``places[r]`` of ``batch_size``) and, in training, a seed
    shared by every row of the step (``step_seed``, see `shared`)."""

    rows: tuple[torch.Generator, ...]
    places: tuple[int, ...]
    batch_size: int
    step_seed: int | None

    def __new__(cls, row_seeds: Sequence[int], seed: int, places: Sequence[int] | None = None,
                batch_size: int | None = None, step_seed: int | None = None) -> "RowGenerator":
        self = super().__new__(cls)
        self.rows = tuple(torch.Generator().manual_seed(int(s)) for s in row_seeds)
        self.places = tuple(int(p) for p in places) if places is not None else tuple(range(len(self.rows)))
        self.batch_size = batch_size if batch_size is not None else len(self.rows)
        self.step_seed = step_seed
        return self

    def __init__(self, row_seeds: Sequence[int], seed: int, places: Sequence[int] | None = None,
                 batch_size: int | None = None, step_seed: int | None = None) -> None:
        super().__init__()
        self.manual_seed(seed)  # for objectives that draw batch-wide


def row(gen: torch.Generator, r: int) -> torch.Generator:
    """The generator row ``r`` draws from: its own under a `RowGenerator`, else ``gen``."""
    return gen.rows[r] if isinstance(gen, RowGenerator) else gen


def rand(gen: torch.Generator, n_rows: int, width: int) -> torch.Tensor:
    """Uniform [0, 1) floats ``(n_rows, width)``, each row from its own generator if it has one."""
    if not isinstance(gen, RowGenerator):
        return torch.rand(n_rows, width, generator=gen)
    _check(gen, n_rows)
    return torch.stack([torch.rand(width, generator=g) for g in gen.rows])


def randint(gen: torch.Generator, low: int, high: int, n_rows: int, width: int) -> torch.Tensor:
    """Integers in [low, high) ``(n_rows, width)``, each row from its own generator if it has one."""
    if not isinstance(gen, RowGenerator):
        return torch.randint(low, high, (n_rows, width), generator=gen)
    _check(gen, n_rows)
    return torch.stack([torch.randint(low, high, (width,), generator=g) for g in gen.rows])


def strata(gen: torch.Generator, n_rows: int) -> tuple[torch.Tensor, int]:
    """Each row's stratum and the number of strata, for draws spread evenly over the global
    batch (a low-discrepancy sampler): the rows' places in it under a `RowGenerator`, else
    ``0 .. n_rows - 1`` of ``n_rows``."""
    if not isinstance(gen, RowGenerator):
        return torch.arange(n_rows), n_rows
    _check(gen, n_rows)
    return torch.tensor(gen.places), gen.batch_size


def shared(gen: torch.Generator) -> torch.Generator | None:
    """A fresh generator seeded by the step alone, the same in every micro-batch and process
    (a mixture picks one component per step from it), or None outside training: under a plain
    generator, or a `RowGenerator` made without a ``step_seed``."""
    seed = getattr(gen, "step_seed", None)
    return None if seed is None else torch.Generator().manual_seed(seed)


def subset(gen: torch.Generator, rows: Sequence[int], places: Sequence[int], batch_size: int) -> torch.Generator:
    """The generator for ``rows`` of a batch, which a component of a composite objective makes
    alone: those rows' own generators, at ``places`` of its ``batch_size`` rows in the global
    batch (for `strata`). A plain generator is returned as it is."""
    if not isinstance(gen, RowGenerator):
        return gen
    out = RowGenerator([], seed=gen.rows[rows[0]].initial_seed(), places=places, batch_size=batch_size,
                       step_seed=gen.step_seed)
    out.rows = tuple(gen.rows[r] for r in rows)
    return out


def _check(gen: RowGenerator, n_rows: int) -> None:
    if n_rows != len(gen.rows):
        raise ValueError(f"a draw for {n_rows} rows from a generator of a {len(gen.rows)}-row batch")
