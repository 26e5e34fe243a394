"""Fault injection: damaged checkpoints and caches, bad inputs, hostile names, Ctrl-C.

One table of cases, each building one fault in its own folder and running the real command
line in-process (or, where the command line cannot name it, one API call) on a tiny PTB model.
The test counts inputs tried, clear one-line errors, damage repaired with a one-line warning,
commands that must keep working, tracebacks (must be 0), runs that used damaged data (must be
0: a damaged checkpoint is never loaded, a damaged cache entry is rebuilt before anything
reads it, so results equal an undamaged run's) and checks that left files behind (must be 0).
README's "Reliability" section states the summary line this test prints.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from objbench.harness import checkpoint as ckpt
from objbench.harness.cli import main
from objbench.harness.config import DataConfig
from objbench.harness.data import prepare_data
from objbench.harness.errors import ObjbenchError
from objbench.harness.integrity import file_digest, record
from objbench.harness.reading import TrainedModel
from objbench.harness.trainer import Trainer
from tests.conftest import TINY

pytestmark = pytest.mark.usefixtures("fresh_cache")  # faults are injected into a cache of our own

SETS = [arg for item in TINY for arg in ("--set", item)]
PROBE = ["--task", "sentiment", "--set", "sentiment.max_train=60", "--set",
         "sentiment.max_validation=20", "--set", "sentiment.max_test=40"]
STEP2, STEP4 = "checkpoints/step-0000002", "checkpoints/step-0000004"  # TINY: 4 steps, 2 evals
ERROR, WARNING = "objbench: error:", "objbench: warning:"


# --- the shared runs and the command line ------------------------------------------------------

@dataclass
class Outcome:
    code: int | None  # exit status; None when an exception escaped
    stdout: str
    stderr: str

    def lines(self, prefix: str) -> list[str]:
        """stderr lines starting with ``prefix`` (progress bars redraw with carriage returns)."""
        return [l for l in self.stderr.replace("\r", "\n").splitlines() if l.startswith(prefix)]


def run(command: Sequence[str] | Callable[[], object]) -> Outcome:
    """Run the CLI (or one API call) as a user would meet it: exit status and captured output.

    An API call is held to the CLI's rule: an `ObjbenchError` counts as exit 2 with its message
    as the one error line; any other exception is a traceback.
    """
    out, err = io.StringIO(), io.StringIO()
    code: int | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if callable(command):
                try:
                    command()
                except ObjbenchError as exc:
                    print(f"{ERROR} {exc}", file=err)
                    code = 2
            else:
                main(list(command))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - a raw traceback is exactly what is counted
            traceback.print_exc(file=err)
            code = None
    return Outcome(code, out.getvalue(), err.getvalue())


def train(out: Path, *extra: str) -> list[str]:
    return ["train", "mlm", "--out", str(out), *SETS, *extra]


@pytest.fixture(scope="module")
def ref(tmp_path_factory, fresh_cache) -> Path:
    """A finished tiny run and its sentiment probe, made in this module's cache: the undamaged
    result every repaired case must reproduce exactly."""
    out = tmp_path_factory.mktemp("faults") / "ref"
    for command in (train(out), ["probe", str(out), *PROBE]):
        result = run(command)
        assert result.code == 0, result.stderr
    return out


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]  # wall clock


def same_run(run_dir: Path, ref: Path) -> bool:
    """Bit-identical metrics and final weights: what a run that read no damaged byte gives."""
    final = lambda d: load_file(str(ckpt.checkpoints(d)[-1] / ckpt.MODEL))
    if not ckpt.checkpoints(run_dir) or metrics(run_dir) != metrics(ref):
        return False
    a, b = final(run_dir), final(ref)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def probe_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "probe_results.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


# --- how faults are made -----------------------------------------------------------------------

def copy_of(ref: Path, where: Path) -> Path:
    return Path(shutil.copytree(ref, where / "run"))


def flip(path: Path, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of a file, in place (same size)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


def truncate(path: Path, size: int = 1000) -> None:
    with path.open("r+b") as handle:
        handle.truncate(size)


def edit_yaml(path: Path, **changes) -> None:
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **changes}))


def make_legacy(run_dir: Path) -> None:
    """Checkpoints as objbench wrote them before manifests: no manifest, only a config hash."""
    for folder in ckpt.checkpoints(run_dir):
        (folder / ckpt.MANIFEST).unlink()
        state = json.loads((folder / ckpt.STATE).read_text())
        state["config_hash"] = "0123456789abcdef"
        del state["config"], state["tokenizer_hash"]
        (folder / ckpt.STATE).write_text(json.dumps(state))


def retokenized(run_dir: Path) -> None:
    """Checkpoints whose (consistent, intact) record says another tokenizer trained them."""
    for folder in ckpt.checkpoints(run_dir):
        state = json.loads((folder / ckpt.STATE).read_text())
        state["tokenizer_hash"] = "feedfacefeedface"
        (folder / ckpt.STATE).write_text(json.dumps(state))
        files = record(folder, [folder / ckpt.MODEL, folder / ckpt.OPTIMIZER, folder / ckpt.STATE])
        (folder / ckpt.MANIFEST).write_text(json.dumps({"files": files}))


def cache_file(pattern: str) -> Path:
    found = sorted(Path(os.environ["OBJBENCH_CACHE"]).glob(pattern))
    assert found, pattern
    return found[0]


def blocks(ref: Path, split: str = "train") -> Path:
    """The cached token blocks of the reference run's data."""
    return cache_file(f"blocks/*-{file_digest(ref / 'tokenizer.json')[:16]}-{split}-32.npy")


def one_token_everywhere(path: Path) -> None:
    """Every cached training token set to one id (the .npy header kept)."""
    blocks = np.load(path, mmap_mode="r+")
    blocks[:] = 7
    blocks.flush()


def tampered_tokenizer(where: Path) -> list[str]:
    """A cached tokenizer whose vocabulary was edited, then a run that needs it. The tokenizer
    is one of a small corpus of its own: quick to train, and the shared runs keep theirs."""
    corpus = where / "corpus.txt"
    corpus.write_text("\n\n".join(f"document {i}: the {i % 7} cats saw {i % 11} dogs by the river"
                                   for i in range(400)))
    settings = {"corpus": str(corpus), "vocab_size": 200, "block_size": 32}
    path = prepare_data(DataConfig(**settings)).tokenizer_path
    path.write_text(path.read_text().replace('"the":', '"TAMPERED":', 1))
    return train(where / "run", *(a for k, v in settings.items() for a in ("--set", f"data.{k}={v}")))


def interrupt_once_at_step(monkeypatch, step: int) -> None:
    """Ctrl-C arriving while step ``step + 1`` trains, once."""
    real = Trainer.train_step

    def train_step(self):
        if self.counters.step == step:
            monkeypatch.setattr(Trainer, "train_step", real)
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "train_step", train_step)


def twin_plugin(where: Path, monkeypatch) -> None:
    """A second installed package that registers the example package's objective name."""
    dist = where / "site" / "objbench_fault_twin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: objbench-fault-twin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[objbench.objectives]\nreverse-clm = objbench_fault_twin:Reverse\n")
    monkeypatch.syspath_prepend(str(where / "site"))


def study_file(where: Path, **changes) -> Path:
    spec = {"name": "faults", "reference": "mlm", "seeds": [0], "budget": {"steps": 4},
            "arms": [{"name": "mlm", "objective": "mlm"}, {"name": "mar", "objective": "masked-ar"}],
            "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_len": 160},
            "data": {"corpus": "ptb", "vocab_size": 1000, "block_size": 32, "val_blocks": 8},
            "train": {"batch_size": 8, "eval_points": 2, "threads": 1}, **changes}
    path = where / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def read_only_folder(where: Path) -> Path:
    """A folder no file can be created in. Permission bits do not bind root, for whom sysfs
    (which refuses new files) stands in."""
    if os.geteuid() == 0:
        return Path("/sys/objbench-faults")
    folder = where / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "run"


# --- the matrix --------------------------------------------------------------------------------

Command = Sequence[str] | Callable[[], object]
Build = Callable[[Path, Path, pytest.MonkeyPatch], Command]  # (case folder, ref, patch) -> what to run
EXIT = {"error": 2, "interrupt": 130, "warning": 0, "works": 0}


@dataclass
class Case:
    """One fault: ``build`` makes it and returns what to run; ``expect`` is a fragment of the
    one line the case must print: its error, Ctrl-C or warning line, or stdout for ``works``."""

    name: str
    build: Build
    expect: str
    kind: str = "error"  # error (exit 2) | interrupt (130) | warning (repaired, 0) | works (0)
    used_damage: Callable[[Path, Path], bool] | None = None  # (case folder, ref) -> bool
    left_behind: Callable[[Path], bool] | None = None  # a check meant to come first left files


def resumed(damage: Callable[[Path], None], *extra: str) -> Build:
    """Damage a copy of the finished run, then rerun its command."""
    def build(where: Path, ref: Path, _) -> Command:
        damage(copy_of(ref, where))
        return train(where / "run", *extra)
    return build


def probed(damage: Callable[[Path], None]) -> Build:
    """Damage a copy of the finished run (without its probe results), then probe it."""
    def build(where: Path, ref: Path, _) -> Command:
        copy = copy_of(ref, where)
        (copy / "probe_results.jsonl").unlink()
        damage(copy)
        return ["probe", str(copy), *PROBE]
    return build


def asked_for_damaged(where: Path, ref: Path, _) -> Command:
    """Read an older checkpoint by name (as a study does at its probe points), damaged."""
    flip(copy_of(ref, where) / STEP2 / ckpt.MODEL)
    return lambda: TrainedModel(where / "run", where / "run" / STEP2)


def cache_damaged(damage: Callable[[Path], None], *command: str) -> Build:
    """Damage the shared cache (located through the reference run), then train the same config
    afresh, or run ``command`` on a copy of the reference run (``{run}`` in its arguments)."""
    def build(where: Path, ref: Path, _) -> Command:
        damage(ref)
        if not command:
            return train(where / "run")
        copy = copy_of(ref, where)
        return [a.format(run=copy) for a in command]
    return build


def with_file(name: str, content: str | bytes, *args: str) -> Build:
    """Write ``name`` in the case folder, then run ``args`` (``{file}``, ``{where}`` filled in)."""
    def build(where: Path, ref: Path, _) -> Command:
        path = where / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return [a.format(file=path, where=where) for a in args]
    return build


def corpus(name: str, content: str | bytes) -> Build:
    return with_file(name, content, *train(Path("{where}/run"), "--set", "data.corpus={file}"))


def study(action: str, *extra: str, **changes) -> Build:
    """A tiny study file with ``changes``, validated or run (``{where}`` filled in strings)."""
    def build(where: Path, ref: Path, _) -> Command:
        fill = lambda v: v.format(where=where) if isinstance(v, str) else v
        path = study_file(where, **{k: fill(v) for k, v in changes.items()})
        return ["study", action, str(path), *map(fill, extra)]
    return build


def command(*args: str) -> Build:
    """A command with no fault to build; ``{where}`` is the case folder, ``{ref}`` the run."""
    return lambda where, ref, _: [a.format(where=where, ref=ref) for a in args]


def interrupted(where: Path, ref: Path, patch: pytest.MonkeyPatch) -> Command:
    interrupt_once_at_step(patch, 2)
    return train(where / "run")


def study_into_file(where: Path, ref: Path, _) -> Command:
    (where / "file").write_text("x")
    return ["study", "run", str(study_file(where)), "--out", str(where / "file")]


def escaping_study(where: Path, ref: Path, patch: pytest.MonkeyPatch) -> Command:
    patch.chdir(where)  # the default study folder is runs/<name> under the working folder
    return ["study", "run", str(study_file(where, name="../../escaped"))]


def twin(*args: str) -> Build:
    """``args`` run while two installed packages claim the objective name ``reverse-clm``."""
    def build(where: Path, ref: Path, patch: pytest.MonkeyPatch) -> Command:
        twin_plugin(where, patch)
        return [a.format(where=where) for a in args]
    return build


def differs_from_ref(where: Path, ref: Path) -> bool:
    return not same_run(where / "run", ref)


def probe_written(where: Path, ref: Path) -> bool:
    return bool(probe_rows(where / "run"))


def resume_differs(where: Path, ref: Path) -> bool:
    """After Ctrl-C, rerunning the same command must end exactly as an uninterrupted run."""
    return run(train(where / "run")).code != 0 or differs_from_ref(where, ref)


def run_created(where: Path) -> bool:
    return (where / "run").exists()


TRAIN = train(Path("{where}/run"))
CASES = [
    # checkpoints: resume falls back to the newest intact one and ends exactly as if undamaged
    Case("resume: 64 flipped bytes in model.safetensors", resumed(lambda r: flip(r / STEP4 / ckpt.MODEL)),
         "step-0000004 is damaged: model.safetensors has sha256", "warning", differs_from_ref),
    Case("resume: truncated model.safetensors", resumed(lambda r: truncate(r / STEP4 / ckpt.MODEL)),
         "model.safetensors has 1,000 bytes, expected", "warning", differs_from_ref),
    Case("resume: optimizer file missing", resumed(lambda r: (r / STEP4 / ckpt.OPTIMIZER).unlink()),
         "optimizer.safetensors is missing; moved to", "warning", differs_from_ref),
    Case("resume: flipped byte in state.json", resumed(lambda r: flip(r / STEP4 / ckpt.STATE, 1)),
         "state.json has sha256", "warning", differs_from_ref),
    Case("resume: manifest missing", resumed(lambda r: (r / STEP4 / ckpt.MANIFEST).unlink()),
         "manifest.json is missing", "warning", differs_from_ref),
    Case("resume: manifest not JSON", resumed(lambda r: (r / STEP4 / ckpt.MANIFEST).write_text("{")),
         "manifest.json is unreadable", "warning", differs_from_ref),
    Case("resume: every checkpoint damaged",
         resumed(lambda r: [flip(r / step / ckpt.MODEL) for step in (STEP2, STEP4)]),
         "no intact checkpoint left: starting from step 0", "warning", differs_from_ref),
    Case("resume: checkpoint written before manifests", resumed(make_legacy),
         "was written by an objbench that did not record checksums"),
    Case("resume: same folder, another config", resumed(lambda r: None, "--set", "train.lr=0.001"),
         "train.lr: checkpoint 0.002, this run 0.001; use a fresh output folder"),
    Case("resume: checkpoint of another tokenizer", resumed(retokenized),
         "tokenizer sha256: checkpoint feedfacefeedface..., this run"),
    # checkpoints: a probe reads the checkpoint meant, or nothing
    Case("probe: 64 flipped bytes in the newest model", probed(lambda r: flip(r / STEP4 / ckpt.MODEL)),
         "(the run's newest checkpoint; no other is read in its place): rerun the run's `objbench "
         "train` command to redo it from step-0000002", used_damage=probe_written),
    Case("probe: truncated newest model", probed(lambda r: truncate(r / STEP4 / ckpt.MODEL)),
         "model.safetensors has 1,000 bytes", used_damage=probe_written),
    Case("probe: newest state.json missing", probed(lambda r: (r / STEP4 / ckpt.STATE).unlink()),
         "state.json is missing", used_damage=probe_written),
    Case("probe: config.yaml edited, objective mlm -> clm",
         probed(lambda r: edit_yaml(r / "config.yaml", objective="clm", options={})),
         "objective: checkpoint mlm, config.yaml clm", used_damage=probe_written),
    Case("probe: tokenizer.json edited",
         probed(lambda r: (r / "tokenizer.json").write_text(
             (r / "tokenizer.json").read_text().replace('"the":', '"teh":', 1))),
         "tokenizer sha256: checkpoint", used_damage=probe_written),
    Case("probe: config.yaml not YAML", probed(lambda r: (r / "config.yaml").write_text("a: [")),
         "config.yaml: not valid YAML at line 1, column 5", used_damage=probe_written),
    Case("probe: checkpoint written before manifests", probed(make_legacy),
         "did not record checksums", used_damage=probe_written),
    Case("TrainedModel: the damaged checkpoint asked for", asked_for_damaged,
         "(the checkpoint asked for; no other is read in its place)"),
    # caches: rebuilt before anything reads them, so results equal the undamaged run's
    Case("cache: every training token set to one id",
         cache_damaged(lambda ref: one_token_everywhere(blocks(ref))),
         "-train-32.npy is damaged", "warning", differs_from_ref),
    Case("cache: token blocks without their hash record (written before hashes were)",
         cache_damaged(lambda ref: Path(f"{blocks(ref, 'validation')}.manifest.json").unlink()),
         "-validation-32.npy has no readable record of its hashes; rebuilding it", "warning",
         differs_from_ref),
    Case("cache: flipped byte in the cleaned corpus",
         cache_damaged(lambda ref: flip(cache_file("corpora/ptb-*/train/*.arrow"), 1)),
         "/train/data-00000-of-00001.arrow has sha256", "warning", differs_from_ref),
    Case("cache: flipped byte in probe data",
         cache_damaged(lambda ref: flip(cache_file("probes/sentiment-*/train/*.arrow"), 1),
                       "probe", "{run}", *PROBE),
         "probes/sentiment-", "warning",
         lambda where, ref: probe_rows(where / "run") != probe_rows(ref)),
    Case("cache: tokenizer vocabulary edited", lambda where, ref, _: tampered_tokenizer(where),
         "tokenizers/", "warning",
         lambda where, ref: "TAMPERED" in (where / "run" / "tokenizer.json").read_text()),
    # errors found before any work, one line each
    Case("study validate: masked-ar rows longer than model.max_len",
         study("validate", model={"d_model": 32, "n_heads": 2, "d_ff": 64, "max_len": 33}),
         "arms[1] (mar): objective 'masked-ar' needs 34 positions for a block of data.block_size=32 "
         "tokens, more than model.max_len=33: raise model.max_len to 34 or lower data.block_size to 31"),
    Case("train: block longer than model.max_len", command(*TRAIN, "--set", "model.max_len=32"),
         "objective 'mlm' needs 33 positions", left_behind=run_created),
    Case("train: --out is an existing file", with_file("file", "x", *train(Path("{file}"))),
         "is an existing file; choose a folder (--out)"),
    Case("train: --out in a read-only folder", lambda where, ref, _: train(read_only_folder(where)),
         "cannot write into output folder"),
    Case("study run: --out is an existing file", study_into_file, "is an existing file"),
    Case("study run: --shard 5/2", study("run", "--out", "{where}/run", "--shard", "5/2"),
         "--shard '5/2': expected i/n with 0 <= i < n", left_behind=run_created),
    Case("study run: --shard x", study("run", "--out", "{where}/run", "--shard", "x"), "--shard 'x'",
         left_behind=run_created),
    Case("train: Ctrl-C at step 3", interrupted,
         "interrupted at step 2 of ", "interrupt", resume_differs),
    Case("corpus: empty .txt", corpus("c.txt", ""), "c.txt is empty"),
    Case("corpus: NUL-only .txt", corpus("c.txt", b"\0" * 64),
         "c.txt is empty: no text, only whitespace or NUL bytes"),
    Case("corpus: bad JSON on line 3 of a .jsonl",
         corpus("c.jsonl", '{"text": "a"}\n{"text": "b"}\n{"text": oops}\n'),
         "c.jsonl: line 3 is not valid JSON"),
    Case("study: arm-level budget",
         study("validate", arms=[{"name": "mlm", "objective": "mlm", "budget": {"steps": 3}}]),
         "arms.0: arms cannot set budget: every arm of a study shares them"),
    Case("study: seeds [0, 0]", study("validate", seeds=[0, 0]), "seeds must be unique; repeated: [0]"),
    Case("study: name ../../escaped", escaping_study, "name: '../../escaped' becomes a folder name",
         left_behind=lambda where: (where.parent.parent / "escaped").exists()),
    Case("study: absolute name", study("run", name="{where}/abs"),
         "becomes a folder name, so it must be non-empty",
         left_behind=lambda where: (where / "abs").exists()),
    # plugins: a name claimed twice is unavailable, nothing else is
    Case("plugins: train the name two packages claim",
         twin("train", "reverse-clm", "--out", "{where}/run"),
         "objective 'reverse-clm' is registered by package 'objbench-fault-twin' "
         "(objbench_fault_twin:Reverse) and package 'objbench-reverse-lm'"),
    Case("plugins: list objectives with a name claimed twice", twin("objectives"),
         "reverse-clm  BROKEN: objective 'reverse-clm' is registered by", "works"),
    Case("plugins: train mlm with a name claimed twice", twin(*TRAIN), "trained mlm into", "works",
         differs_from_ref),
    # the earlier clean rejections
    Case("config: unknown key", command(*TRAIN, "--set", "trian.lr=1"),
         "trian: unknown key (did you mean 'train'?)"),
    Case("config: unknown objective", command("train", "mlmm", "--out", "{where}/run"),
         "unknown objective 'mlmm'. Did you mean 'mlm'?"),
    Case("config: option out of range", command(*TRAIN, "--set", "options.mask_rate=1.5"),
         "invalid options of objective 'mlm': mask_rate: Input should be less than or equal to 1"),
    Case("config: objective's special tokens missing",
         command("train", "masked-ar", "--out", "{where}/run", *SETS, "--set", "data.special_tokens=[]"),
         "objective 'masked-ar' needs the special tokens ['[S]', '[E]']"),
    Case("config: two budget axes",
         with_file("c.yaml", "budget: {steps: 3, tokens: 5}\n",
                   "train", "mlm", "--out", "{where}/run", "--config", "{file}"),
         "budget: set exactly one of steps / tokens / targets / flops"),
    Case("config: --config file missing", command(*TRAIN, "--config", "{where}/none.yaml"),
         "none.yaml: no such file"),
    Case("config: --config not YAML", with_file("c.yaml", "model: [\n", *TRAIN, "--config", "{file}"),
         "c.yaml: not valid YAML at line 2, column 1"),
    Case("config: override without =", command(*TRAIN, "--set", "budget.steps"),
         "is not of the form key.path=value"),
    Case("corpus: no such file", command(*TRAIN, "--set", "data.corpus={where}/none.txt"),
         "there is no file or folder at"),
    Case("corpus: not UTF-8", corpus("c.txt", "caf\xe9\n\nx\n".encode("latin-1")),
         "c.txt: bytes at offset 3 are not valid UTF-8"),
    Case("probe: unknown task", command("probe", "{ref}", "--task", "poss"),
         "unknown task 'poss'. Did you mean 'pos'?"),
    Case("probe: unknown task option",
         command("probe", "{ref}", "--task", "pos", "--set", "pos.max_trian=3"),
         "max_trian: unknown key (did you mean 'max_train'?)"),
    Case("probe: not a run folder", command("probe", "{where}", "--task", "pos"),
         "is not an objbench run"),
    Case("study: reference not an arm", study("validate", reference="zzz"),
         "reference 'zzz' is not an arm"),
    Case("study: unknown objective", study("validate", arms=[{"name": "mlm", "objective": "mlmm"}]),
         "arms[0] (mlm): unknown objective 'mlmm'"),
    Case("study: probe_at off the evaluation points", study("validate", probe_at=[0.3]),
         "probe_at [0.3] are not evaluation points [0.5, 1.0] (train.eval_points=2)"),
]


def judge(case: Case, outcome: Outcome) -> tuple[str, str | None]:
    """(what the case did, what is wrong with it or None): a case prints exactly one line of its
    kind, containing ``expect``, and exits as that kind does; any traceback is counted."""
    if outcome.code is None or "Traceback (most recent call last)" in outcome.stderr:
        return "traceback", outcome.stderr[-2000:]
    prefix = {"error": ERROR, "interrupt": "objbench: interrupted", "warning": WARNING}.get(case.kind)
    lines = outcome.lines(prefix) if prefix else [outcome.stdout]
    if outcome.code != EXIT[case.kind]:
        return "wrong exit", f"exit {outcome.code}, expected {EXIT[case.kind]}: {outcome.stderr[-1500:]}"
    if len(lines) != 1 or case.expect not in lines[0]:
        got = lines or outcome.stderr[-1500:]
        return case.kind, f"expected one line with {case.expect!r}; got {got}"
    if "(got {'" in lines[0]:
        return case.kind, f"the message dumps a whole mapping: {lines[0]}"
    last = outcome.stderr.replace("\r", "\n").strip().splitlines()[-1:]
    if case.kind in ("error", "interrupt") and last != lines:
        return case.kind, f"the message is not the last line: {last}"
    return case.kind, None


@pytest.mark.slow  # 57 faults through the CLI: ~10 s
def test_fault_matrix(ref, tmp_path, monkeypatch, capsys):
    counts: Counter[str] = Counter()
    problems = []
    for index, case in enumerate(CASES):
        where = tmp_path / f"case{index:02d}"
        where.mkdir()
        with monkeypatch.context() as patch:
            kind, problem = judge(case, run(case.build(where, ref, patch)))
            counts["tried"] += 1
            counts[kind] += 1
            if problem:
                problems.append(f"{case.name}: {problem}")
            if case.used_damage and case.used_damage(where, ref):
                counts["damaged data used"] += 1
                problems.append(f"{case.name}: used damaged data")
            if case.left_behind and case.left_behind(where):
                counts["left files behind"] += 1
                problems.append(f"{case.name}: left files behind")
    with capsys.disabled():
        print(f"\nfaults: {counts['tried']} inputs tried, {counts['error'] + counts['interrupt']} "
              f"clear one-line errors, {counts['warning']} repaired with a one-line warning, "
              f"{counts['works']} still working, {counts['traceback']} tracebacks, "
              f"{counts['damaged data used']} runs used damaged data, {counts['left files behind']} "
              f"left files behind")
    assert not problems, "\n".join(problems)
    assert counts["traceback"] == counts["damaged data used"] == counts["left files behind"] == 0
    assert counts["tried"] == len(CASES) == sum(counts[k] for k in EXIT)
