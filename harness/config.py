"""Typed, validated configuration for one training run.

Every field says what it means and its unit. Configs are validated completely before any
work starts; errors name the key, the value given and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import reprlib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from objbench.harness.errors import ConfigError


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Strict):
    d_model: int = Field(128, ge=8, description="hidden size")
    n_layers: int = Field(2, ge=1, description="number of Transformer blocks")
    n_heads: int = Field(4, ge=1, description="attention heads; must divide d_model")
    d_ff: int = Field(512, ge=8, description="feed-forward inner size")
    max_len: int = Field(512, ge=8, description="positions the model reads (learned: embeddings); >= longest input an objective builds")
    position: Literal["learned", "rope"] = Field(
        "learned", description="learned: absolute position embeddings added to the input; rope: "
        "rotary embeddings of each query and key (relative positions)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="off by default for pre-training: faster, and stated in reports")

    @model_validator(mode="after")
    def _heads_fit(self) -> "ModelConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        if self.position == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError(f"position=rope turns pairs of dimensions, but a head has {self.d_model // self.n_heads} "
                             f"(d_model={self.d_model} / n_heads={self.n_heads}): choose an even head size")
        return self


class DataConfig(Strict):
    corpus: str = Field("news", description="'news', 'ptb', a local file/folder, or 'hf:name[/config]'")
    tokenizer: Literal["wordpiece", "bpe"] = "wordpiece"
    tokenizer_file: str | None = Field(None, description="use this tokenizer.json instead of training one")
    vocab_size: int = Field(8192, ge=64, le=65535, description="stored as uint16 blocks")
    block_size: int = Field(128, ge=4, description="clean text tokens per training block")
    validation_fraction: float = Field(0.05, gt=0.0, lt=0.5, description="documents held out (named corpora with a split ignore it)")
    val_blocks: int = Field(64, ge=1, description="validation blocks used for the validation loss")
    unique_tokens: int | None = Field(
        None, gt=0, description="cap on unique training data: a prefix of whole training documents of "
        "at most this many tokens, repeated in epochs (a fresh seeded order each) when the budget "
        "is larger; null = the whole training split. Validation is never capped")
    special_tokens: list[str] = Field(
        ["[S]", "[E]"], description="specials reserved beyond [PAD] [CLS] [SEP] [MASK] [UNK]; "
        "every arm of a study shares one tokenizer, so this covers all their objectives")


def capped_arm(arm: str, cap: int | None) -> str:
    """The name under which a study's ``data_caps`` sweep runs ``arm`` at one cap on unique
    training tokens: ``mlm-all`` (no cap), ``mlm-500k``, ``mlm-1.25M``."""
    if cap is None:
        return f"{arm}-all"
    return f"{arm}-{cap / 1e6:g}M" if cap >= 1_000_000 else f"{arm}-{cap / 1e3:g}k"


def study_arms(arms: list[str], data_caps: list[int | None]) -> list[str]:
    """The arms a study's runs are named by: its arms, or each at each cap of ``data_caps``."""
    return [capped_arm(arm, cap) for arm in arms for cap in data_caps] if data_caps else list(arms)


# What a budget can be counted in; every step logs all of them (metrics.jsonl columns).
BUDGET_AXES = ("steps", "tokens", "targets", "flops")


class BudgetConfig(Strict):
    """Exactly one axis: the point at which training stops."""

    steps: int | None = Field(None, gt=0, description="optimizer steps")
    tokens: int | None = Field(None, gt=0, description="clean corpus tokens consumed")
    targets: int | None = Field(None, gt=0, description="supervised predictions (positions with a loss)")
    flops: float | None = Field(None, gt=0, description="model FLOPs, forward + backward")

    @model_validator(mode="after")
    def _one_axis(self) -> "BudgetConfig":
        set_axes = [a for a in BUDGET_AXES if getattr(self, a) is not None]
        if len(set_axes) != 1:
            raise ValueError(f"set exactly one of {' / '.join(BUDGET_AXES)} (got {set_axes or 'none'})")
        return self

    @property
    def axis(self) -> str:
        return next(a for a in BUDGET_AXES if getattr(self, a) is not None)

    @property
    def value(self) -> float:
        return float(getattr(self, self.axis))


# wsd's decay: the last fifth of the budget, where a linear cooldown from a held peak matches a
# cosine schedule of the same length (Hägele et al. 2024). A constant, not a setting, so that
# runs of the other schedules keep their config hashes.
WSD_COOLDOWN = 0.2


class TrainConfig(Strict):
    batch_size: int = Field(32, ge=1, description="blocks per optimizer step (global, all ranks)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per step; batch_size must be divisible")
    lr: float = Field(2e-3, gt=0.0, description="peak learning rate")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="final lr as a fraction of peak")
    warmup: float = Field(0.05, ge=0.0, lt=1.0, description="fraction of the budget spent warming up")
    schedule: Literal["cosine", "linear", "constant", "wsd"] = Field(
        "cosine", description="after warmup: cosine or linear decay to the floor over the rest of the "
        "budget, constant at the peak, or wsd (warmup-stable-decay): the peak held until the last "
        f"{WSD_COOLDOWN:.0%} of the budget, then a linear decay to the floor")
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = Field(1.0, ge=0.0, description="max grad norm; 0 disables")
    eval_points: int = Field(4, ge=1, description="evenly spaced evaluations (val loss + checkpoint) along the budget")
    checkpoint_every: int = Field(100, ge=1, description="also checkpoint every N steps, for resume")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    compile: bool = Field(False, description="torch.compile the encoder")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; None keeps torch's default")
    # Where metrics go never changes results, so it is no part of a run's identity: left out of
    # the resolved config (config.yaml, the run hash, the checkpoint's config a resume compares).
    log_to: list[str] = Field(default_factory=list, description="metric sinks "
                              "besides metrics.jsonl, by registered tracker name (tensorboard)")

    @model_validator(mode="after")
    def _accum_divides(self) -> "TrainConfig":
        if self.batch_size % self.grad_accum:
            raise ValueError(f"grad_accum={self.grad_accum} must divide batch_size={self.batch_size}")
        return self

    @model_validator(mode="after")
    def _warmup_before_cooldown(self) -> "TrainConfig":
        if self.schedule == "wsd" and self.warmup > 1 - WSD_COOLDOWN:
            raise ValueError(f"warmup={self.warmup} runs into wsd's cooldown (the last {WSD_COOLDOWN:.0%} "
                             f"of the budget): set warmup to at most {1 - WSD_COOLDOWN:g}")
        return self


class InitConfig(Strict):
    """Continued pre-training: the run starts from another run's checkpoint instead of from
    its seed's initial weights, and counts that run's budget as its own."""

    run: str = Field(description="the parent run's folder")
    at: float = Field(gt=0.0, lt=1.0, description="the parent's evaluation point (budget fraction) "
                      "to start from; the run trains from there to the end of the budget")


class RunConfig(Strict):
    objective: str = Field("mlm", description="registered objective name (`objbench objectives`)")
    options: dict[str, Any] = Field(default_factory=dict, description="the objective's options")
    seed: int = Field(0, ge=0)
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    budget: BudgetConfig = BudgetConfig(steps=200)  # about 2 min on 2 CPU cores for the slowest (clm)
    init: InitConfig | None = Field(None, description="start from another run's checkpoint (continued "
                                    "pre-training); null: from the seed's initial weights")

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON data; ``init`` only when set and ``model.position`` only when not
        learned, so runs made before these settings existed keep the configs (and hashes) they
        always had."""
        exclude: dict[str, Any] = {}
        if self.init is None:
            exclude["init"] = True
        if self.model.position == "learned":
            exclude["model"] = {"position"}
        return self.model_dump(mode="json", exclude=exclude or None)

    def settings_hash(self) -> str:
        """A hash of the settings that decide the trained model (none of `RESULT_NEUTRAL`)."""
        return content_hash(result_settings(self.to_dict()))


# Settings that decide how fast a run goes and how often it saves, never what it computes
# (beyond the order of float additions): left out of the run hash and of the checkpoint
# comparison, so changing them neither retrains a finished run nor refuses a resume or probe.
# `train.precision` changes results and stays in.
# `init.run` is where the parent run lies, not what it is: a study puts the parent's own
# config hash in its place (`objbench.harness.study.run_keys`).
RESULT_NEUTRAL = ("train.threads", "train.device", "train.compile", "train.checkpoint_every", "train.log_to",
                  "init.run")


def result_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict (``RunConfig.to_dict()``) without the `RESULT_NEUTRAL` settings."""
    out = json.loads(json.dumps(config))
    for key in RESULT_NEUTRAL:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return out


def content_hash(data: Any) -> str:
    """Stable short hash of JSON-serialisable ``data``: equal hashes, equal content."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def config_diff(a: dict[str, Any], b: dict[str, Any], a_name: str, b_name: str,
                limit: int = 6) -> list[str]:
    """``key: <a_name> X, <b_name> Y`` for each dotted key whose value differs, at most ``limit``."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    keys = [*flat_a, *(k for k in flat_b if k not in flat_a)]
    shown = lambda v: "absent" if v is _ABSENT else v if isinstance(v, str) else json.dumps(v)
    out = [f"{k}: {a_name} {shown(flat_a.get(k, _ABSENT))}, {b_name} {shown(flat_b.get(k, _ABSENT))}"
           for k in keys if flat_a.get(k, _ABSENT) != flat_b.get(k, _ABSENT)]
    return out[:limit] + ([f"and {len(out) - limit} more"] if len(out) > limit else [])


_ABSENT = object()


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def validate(cls: type[Strict], data: dict[str, Any], where: str = "config") -> Any:
    """Build ``cls`` from ``data``, turning pydantic's errors into one readable ConfigError."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, cls, where)) from None


def format_errors(exc: ValidationError, cls: type[BaseModel], where: str) -> str:
    """One line for one problem; a header and one indented line per problem for several."""
    lines = [_describe(err, cls) for err in exc.errors()]
    if len(lines) == 1:
        return f"invalid {where}: {lines[0]}"
    return "\n".join([f"invalid {where}:", *(f"  {line}" for line in lines)])


def _describe(err: dict, cls: type[BaseModel]) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        known = _fields_at(cls, err["loc"][:-1])
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{loc}: unknown key{hint}; allowed: {', '.join(sorted(known))}"
    if err["type"] == "value_error":  # our own validators: the message names what it needs
        return f"{loc}: {err['ctx']['error']}"
    return f"{loc}: {err['msg']} (got {reprlib.repr(err.get('input'))})"


def _fields_at(cls: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the nested model at ``loc`` (for did-you-mean on unknown keys)."""
    for part in loc:
        if isinstance(part, int):  # an item of a list field: its model was picked already
            continue
        field = cls.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        ann = next(iter(get_args(ann)), None) if get_origin(ann) is list else ann
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        cls = ann
    return list(cls.model_fields)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (value parsed as YAML) to a nested dict, returning a copy."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = _scalar(yaml.safe_load(raw))
        if parents and parents[0] == "budget":  # one budget axis: setting one replaces the others
            out["budget"] = {leaf: node[leaf]}
    return out


def _scalar(value: Any) -> Any:
    """YAML reads ``2e5`` as a string; a number is what anyone typing it means."""
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value):
        return float(value)
    return value


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, with errors that name the file."""
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
