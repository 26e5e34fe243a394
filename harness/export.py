"""`objbench export`: a trained run as a folder that transformers loads.

The folder is what a model with its own architecture ships: ``config.json`` (with an
``auto_map``), the modeling code (``configuration_objbench.py``, ``modeling_objbench.py``,
torch and transformers only, loaded with ``trust_remote_code=True``), the weights in
``model.safetensors`` under objbench's own parameter names, the run's tokenizer with its
special tokens mapped for ``AutoTokenizer``, and a model card (``README.md``).

Which classes the folder offers follows the objective's reading rules, never its name:
``AutoModel`` (features; ``pooler_output`` is the objective's pooled state) always, plus
``AutoModelForMaskedLM`` for a bidirectional reading or ``AutoModelForCausalLM`` for a causal
one. Everything reads under that attention, so the exported model's hidden states and logits
are objbench's own. Nothing here imports transformers: writing the folder needs only objbench.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file
from tokenizers import Tokenizer, processors

from objbench.harness import checkpoint as ckpt
from objbench.harness.errors import CheckpointError, ExportError
from objbench.harness.model_card import model_card
from objbench.harness.reading import TrainedModel
from objbench.objectives.base import BASE_SPECIALS

CODE = Path(__file__).with_name("export_files")  # the modeling code written into every export
MODEL_TYPE = "objbench"
#: the LM class each reading attention gets: a [MASK] read in context, or the next token
LM_CLASS = {"bidirectional": ("AutoModelForMaskedLM", "ObjbenchForMaskedLM"),
            "causal": ("AutoModelForCausalLM", "ObjbenchForCausalLM")}
POOLINGS = ("cls", "last", "mean")


def export_run(run_dir: Path, out: Path, step: int | None = None) -> Path:
    """Write run ``run_dir`` at checkpoint ``step`` (default: its newest) into folder ``out``.

    ``out`` must be new, empty, or an earlier objbench export (replaced). The folder is written
    under a temporary name and renamed when complete, so a failed export leaves nothing that
    looks loadable.
    """
    run_dir, out = Path(run_dir), Path(out)
    model = TrainedModel(run_dir, checkpoint_at(run_dir, step), device="cpu")
    attention, pooling = reading(model)
    _check_out(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("configuration_objbench.py", "modeling_objbench.py"):
        shutil.copyfile(CODE / name, tmp / name)
    (tmp / "config.json").write_text(json.dumps(hf_config(model, attention, pooling), indent=2))
    weights = {k: v.detach().contiguous().cpu() for k, v in model.model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(model, tmp)
    (tmp / "README.md").write_text(model_card(model, run_dir, LM_CLASS[attention][0]))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def checkpoint_at(run_dir: Path, step: int | None) -> Path | None:
    """The run's checkpoint at ``step``; None (the newest) when no step is asked for."""
    if step is None:
        return None
    found = ckpt.checkpoints(run_dir)
    for folder in found:
        if int(folder.name.removeprefix("step-")) == step:
            return folder
    steps = ", ".join(str(int(f.name.removeprefix("step-"))) for f in found) or "none"
    raise CheckpointError(f"{run_dir} has no checkpoint at step {step}; its checkpoints are at "
                          f"steps: {steps} (--checkpoint STEP)")


def reading(model: TrainedModel) -> tuple[str, str]:
    """The (attention, pooling) the run's objective reads under, if the exported code can
    express it; else an ExportError saying why."""
    attention, pooling = model.objective.reading_attention, model.objective.pooling
    if attention not in LM_CLASS or pooling not in POOLINGS:
        raise ExportError(
            f"objective {model.cfg.objective!r} reads under attention {attention!r} with pooling "
            f"{pooling!r}; a transformers export expresses attention {' or '.join(LM_CLASS)} with "
            f"pooling {' or '.join(POOLINGS)}, so this run cannot be exported")
    return attention, pooling


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is an existing file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_export(out):
        raise ExportError(f"--out {out} holds files that are not an objbench export; choose a new "
                          f"or empty folder")


def _is_export(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False


def hf_config(model: TrainedModel, attention: str, pooling: str) -> dict:
    """``config.json``: the encoder's shape under transformers' names, the reading, the special
    token ids, and where transformers finds each class."""
    enc, m = model.model, model.cfg.model
    auto_class, lm_class = LM_CLASS[attention]
    return {
        "model_type": MODEL_TYPE,
        "architectures": [lm_class],
        "auto_map": {"AutoConfig": "configuration_objbench.ObjbenchConfig",
                     "AutoModel": "modeling_objbench.ObjbenchModel",
                     auto_class: f"modeling_objbench.{lm_class}"},
        "objective": model.cfg.objective,
        "vocab_size": enc.vocab_size,
        "hidden_size": m.d_model,
        "num_hidden_layers": m.n_layers,
        "num_attention_heads": m.n_heads,
        "intermediate_size": m.d_ff,
        "max_position_embeddings": m.max_len,
        "position": m.position,
        "type_vocab_size": enc.seg.num_embeddings,
        "dropout": m.dropout,
        "layer_norm_eps": enc.ln_f.eps,
        "reading_attention": attention,
        "pooling": pooling,
        "pad_token_id": model.vocab["[PAD]"],
        "bos_token_id": model.vocab["[CLS]"],  # every objbench input starts with [CLS]
        "eos_token_id": model.vocab["[SEP]"],  # training joins documents with [SEP]
        "use_cache": False,  # no key/value cache: generation recomputes the prefix each step
        "dtype": "float32",
    }


def write_tokenizer(model: TrainedModel, folder: Path) -> None:
    """``tokenizer.json`` adding specials as objbench reads (``[CLS] A``, a pair as
    ``[CLS] A [SEP] B [SEP]`` with B's segment 1), and ``tokenizer_config.json`` naming them."""
    tok = Tokenizer.from_file(str(model.run_dir / "tokenizer.json"))
    cls, sep = model.vocab["[CLS]"], model.vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.save(str(folder / "tokenizer.json"))
    extra = [s for s in model.vocab.specials if s not in BASE_SPECIALS]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model.max_tokens + 1,  # [CLS] and the longest sentence objbench reads
        "padding_side": "right",
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]",
        "unk_token": "[UNK]", "bos_token": "[CLS]", "eos_token": "[SEP]",
        "additional_special_tokens": extra,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
