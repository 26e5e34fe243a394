"""Progress in logs: plain lines every N seconds and at the end where output is not a terminal;
nothing under --quiet; tqdm's bar on a terminal."""

from __future__ import annotations

import io

import pytest
from tqdm.auto import tqdm

from objbench.harness import progress
from objbench.harness.cli import main
from objbench.harness.errors import ConfigError
from objbench.harness.progress import LineProgress, progress_bar
from tests.conftest import TINY


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clean_env(monkeypatch):
    """Undo what `progress.configure` (run by the CLI) sets in the environment."""
    for name in (progress.QUIET_ENV, progress.EVERY_ENV, "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_lines_every_interval_and_a_summary_at_close(clean_env):
    now = [100.0]
    clean_env.setattr(progress.time, "monotonic", lambda: now[0])
    err = io.StringIO()
    clean_env.setattr(progress.sys, "stderr", err)
    clean_env.setenv(progress.EVERY_ENV, "30")
    bar = progress_bar(total=1000, desc="mlm seed 0", unit=" tokens", unit_scale=True, leave=False,
                       summary=True)
    assert isinstance(bar, LineProgress)
    for _ in range(10):  # 10 updates 5 s apart: 50 s, so one line (at 30 s)
        now[0] += 5
        bar.update(100)
        bar.set_postfix(loss="6.930")
    assert err.getvalue().splitlines() == ["mlm seed 0:  60% 600/1.00k [00:30<00:20, 20.0 tokens/s, "
                                           "loss=6.930]"]
    bar.close()
    bar.close()  # closing twice prints once
    lines = err.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("mlm seed 0: 100% 1.00k/1.00k [00:50<00:00")
    assert "\r" not in err.getvalue()


def test_inner_bars_print_no_summary_and_iterate_everything(clean_env):
    err = io.StringIO()
    clean_env.setattr(progress.sys, "stderr", err)
    assert list(progress_bar(range(5), desc="features", leave=False)) == list(range(5))
    assert err.getvalue() == ""  # done within the interval: nothing to report


def test_terminal_gets_tqdm_and_quiet_gets_nothing(clean_env):
    clean_env.setattr(progress.sys, "stderr", Terminal())
    shown = progress_bar(total=3, desc="x")
    assert isinstance(shown, tqdm) and not shown.disable
    shown.close()
    clean_env.setenv(progress.QUIET_ENV, "1")
    hidden = progress_bar(total=3, desc="x")
    assert isinstance(hidden, tqdm) and hidden.disable
    assert list(progress_bar(range(3))) == [0, 1, 2]


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_bad_interval_is_a_config_error(clean_env, value):
    clean_env.setattr(progress.sys, "stderr", io.StringIO())
    clean_env.setenv(progress.EVERY_ENV, value)
    with pytest.raises(ConfigError, match=f"{progress.EVERY_ENV}='{value}': expected seconds"):
        progress_bar(total=3)


def test_train_in_a_log_prints_lines_and_quiet_only_the_result(clean_env, tmp_path, capsys):
    sets = [arg for s in TINY for arg in ("--set", s)]
    clean_env.setenv(progress.EVERY_ENV, "1e-9")  # a line at every step
    main(["train", "mlm", "--out", str(tmp_path / "a"), *sets])
    out, err = capsys.readouterr()
    steps = [l for l in err.splitlines() if l.startswith("mlm seed 0:")]
    assert len(steps) == 5 and steps[-1].startswith("mlm seed 0: 100% 4.00/4.00 [")  # 4 + summary
    assert "\r" not in err and out.startswith("trained mlm into")

    main(["--quiet", "train", "mlm", "--out", str(tmp_path / "b"), *sets])
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("trained mlm into")
