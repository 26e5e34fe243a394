"""The contract catches what it promises to catch, names where, and speaks through the CLI."""

from __future__ import annotations

import re

import pytest
import torch
from pydantic import Field

from objbench.harness.cli import main
from objbench.harness.registry import OBJECTIVES
from objbench.objectives.contract import SEEDS, check_objective
from objbench.objectives.mlm import MaskedLM, MLMOptions


class LeakyOptions(MLMOptions):
    p_mask: float = 1.0
    p_random: float = 0.0
    p_keep: float = 0.0
    leak: float = Field(0.05, description="fraction of rows that show a masked token's clean value")
    salt: int = Field(0, description="draws skipped first, to vary which rows leak")


class LeakyMLM(MaskedLM):
    """mlm that, in a fraction ``leak`` of its rows, puts the first masked token's clean value
    back into the input while still declaring it hidden: the plugin bug the contract is for."""

    description = "a deliberately leaking mlm"
    Options = LeakyOptions

    def make_batch(self, blocks, gen):
        batch = super().make_batch(blocks, gen)
        o = self.options
        leaks = torch.rand(o.salt + len(blocks), generator=gen)[o.salt:] < o.leak
        for b in torch.nonzero(leaks).flatten().tolist():
            i = int(torch.nonzero(batch.targets[b] >= 0)[0])
            batch.input_ids[b, i] = blocks[b, i - 1]  # [CLS] shifts clean index i - 1 to position i
        return batch


@pytest.fixture
def leaky():
    OBJECTIVES.register("leaky-mlm", LeakyMLM)
    yield "leaky-mlm"
    OBJECTIVES.unregister("leaky-mlm")


def leaked_rows(seed: int, leak: float) -> set[int]:
    from objbench.objectives.contract import BLOCK, ROWS, build, random_blocks

    obj = build("leaky-mlm", {"leak": leak})
    blocks = random_blocks(obj, ROWS, BLOCK, seed=1000 + seed)
    batch = obj.make_batch(blocks.clone(), torch.Generator().manual_seed(seed))
    shown = (batch.input_ids[:, 1:] == blocks) & (batch.targets[:, 1:] >= 0)
    return set(torch.nonzero(shown.any(1)).flatten().tolist())


@pytest.mark.parametrize("leak", [0.05, 0.01])
def test_a_leak_in_few_rows_is_caught_with_its_row_position_and_token(leaky, leak):
    results = {c.name: c for c in check_objective(leaky, {"leak": leak})}
    failure = results["no leakage"]
    assert not failure.passed
    found = re.search(r"seed (\d+) row (\d+), token target at position (\d+), its own token: clean index (\d+) "
                      r"= token (\d+): its output depends on clean index (\d+)", failure.detail)
    assert found, failure.detail
    seed, row, position, own, token, seen = map(int, found.groups())
    assert row in leaked_rows(seed, leak)
    assert own == seen == position - 1
    assert results["shapes"].passed and results["scoring"].passed  # only the leak is reported


def test_without_the_leak_every_check_passes(leaky):
    assert all(c.passed for c in check_objective(leaky, {"leak": 0.0}))


def test_the_cli_prints_every_check_and_exits_1_on_a_failure(leaky, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["check-objective", leaky, "--set", "options.leak=0.05"])
    out = capsys.readouterr().out.splitlines()
    assert exit_.value.code == 1
    assert len([line for line in out if line.startswith(("passed", "FAILED"))]) == 9
    assert any(line.startswith("FAILED  no leakage: seed") for line in out)
    assert out[-1] == "leaky-mlm: 8 of 9 checks passed; failed: no leakage"
    main(["check-objective", leaky, "--set", "options.leak=0"])  # returns: exit status 0
    assert capsys.readouterr().out.splitlines()[-1] == "leaky-mlm: 9 of 9 checks passed"


@pytest.mark.parametrize("args, message", [
    (["check-objective", "mlm", "--set", "options.mask_rat=0.2"], "mask_rat: unknown key (did you mean 'mask_rate'?)"),
    (["check-objective", "mlm", "--set", "train.lr=0.1"], "check-objective takes the objective's options only"),
    (["check-objective", "mlmm"], "unknown objective 'mlmm'. Did you mean 'mlm'?"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and message in err and len(err.splitlines()) == 1


def test_rows_examined_make_a_one_percent_leak_a_miss_below_one_percent():
    from objbench.objectives.contract import ROWS

    assert 0.99 ** (SEEDS * ROWS) < 0.01
