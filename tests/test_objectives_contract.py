"""The contract every registered objective (built-in or third-party) must honour, through
`objbench.objectives.contract`: the checks ``objbench check-objective`` runs."""

from __future__ import annotations

from functools import cache

import pytest

from objbench.harness.registry import OBJECTIVES
from objbench.objectives.contract import Check, check_objective

CHECK_NAMES = ["shapes", "determinism", "no leakage", "visibility as declared", "scoring", "loss gradients",
               "FLOPs", "checkpoint round trip", "reading"]
# option settings whose limits or special paths the default options do not reach
SETTINGS = {
    "mlm": [{"unit": "word", "mask_rate": 0.3}, {"unit": "span", "p_mask": 1.0, "p_random": 0.0, "p_keep": 0.0},
            {"score": "pll-word-l2r"}],
    "mntp": [{"score": "pll-word-l2r"}],
    "masked-ar": [{"r": 1.0, "order": "left-to-right"}, {"r": 0.5, "suffix": True}, {"r": 0.15, "score": "joint"},
                  {"score": "pll-word-l2r"}],
    "mdlm": [{"score": "pll"}],
}


@cache
def checks(name: str, options: tuple = ()) -> dict[str, Check]:
    return {c.name: c for c in check_objective(name, dict(options))}


@pytest.mark.parametrize("name", OBJECTIVES.names())
@pytest.mark.parametrize("check", CHECK_NAMES)
def test_every_registered_objective_passes(name, check):
    result = checks(name)[check]
    assert result.passed, result.line()


@pytest.mark.parametrize("name, options", [(n, o) for n, settings in SETTINGS.items() for o in settings])
def test_option_settings_pass(name, options):
    failed = [c.line() for c in checks(name, tuple(sorted(options.items()))).values() if not c.passed]
    assert not failed, failed


def test_the_checks_are_the_ones_documented():
    assert list(checks("clm")) == CHECK_NAMES
