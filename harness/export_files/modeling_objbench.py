"""An encoder trained with objbench, for transformers (written by `objbench export`).

The same network as objbench's ``Encoder``, weight for weight and operation for operation:
token + position + segment embeddings (or, with ``position="rope"``, rotary positions on
queries and keys instead of position embeddings), pre-LN blocks with a fused QKV projection and GELU
feed-forward, a final LayerNorm, and an LM head tied to the token embeddings with its own
bias. Every class reads under the objective's reading attention (``config.reading_attention``),
so features and scores equal objbench's own. Needs torch and transformers only.

Hidden states follow objbench's layer indexing: ``hidden_states[0]`` is the embedding output
and ``hidden_states[l]`` the output of block ``l``, the last one after the final LayerNorm.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    CausalLMOutput,
    MaskedLMOutput,
)

from .configuration_objbench import ObjbenchConfig


def rotary(position_ids: torch.Tensor, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B, T, 1, head_dim / 2) of RoPE's angles, computed in float64 as objbench does."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float64, device=position_ids.device) / head_dim
    angle = position_ids[..., None].to(torch.float64) * base ** -exponent
    return angle.cos()[:, :, None], angle.sin()[:, :, None]


def rotate(x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Queries or keys (B, T, H, Dh): each head's first and second halves turned together."""
    cos, sin = (r.to(x.dtype) for r in rot)
    a, b = x.chunk(2, -1)
    return torch.cat((a * cos - b * sin, a * sin + b * cos), -1)


class ObjbenchBlock(nn.Module):
    """Pre-LN Transformer block with fused QKV projection."""

    def __init__(self, config: ObjbenchConfig) -> None:
        super().__init__()
        d, eps = config.hidden_size, config.layer_norm_eps
        self.n_heads = config.num_attention_heads
        self.dropout = config.dropout
        self.ln1 = nn.LayerNorm(d, eps=eps)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=eps)
        self.ff_in = nn.Linear(d, config.intermediate_size)
        self.ff_out = nn.Linear(config.intermediate_size, d)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor,
                rot: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D) under ``mask`` (bool (B, 1, T, T), True = may attend)."""
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_heads, D // self.n_heads).unbind(2)
        if rot is not None:
            q, k = rotate(q, rot), rotate(k, rot)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.ff_out(F.gelu(self.ff_in(self.ln2(x)))))


class ObjbenchPreTrainedModel(PreTrainedModel):
    config_class = ObjbenchConfig
    base_model_prefix = "objbench"
    _no_split_modules = ["ObjbenchBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        """objbench's initialisation, for weights a checkpoint does not hold."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, ObjbenchModel):
            nn.init.zeros_(module.head_bias)


class ObjbenchModel(ObjbenchPreTrainedModel):
    """The encoder: hidden states and the pooled sentence representation (``pooler_output``,
    the final state at the objective's pooling position). Its parameter names are objbench's,
    so every class here loads the same ``model.safetensors``."""

    def __init__(self, config: ObjbenchConfig) -> None:
        super().__init__(config)
        if config.reading_attention not in ("bidirectional", "causal"):
            raise ValueError(f"reading_attention must be 'bidirectional' or 'causal', "
                             f"not {config.reading_attention!r}")
        if config.pooling not in ("cls", "last", "mean"):
            raise ValueError(f"pooling must be 'cls', 'last' or 'mean', not {config.pooling!r}")
        if config.position not in ("learned", "rope"):
            raise ValueError(f"position must be 'learned' or 'rope', not {config.position!r}")
        d = config.hidden_size
        self.tok = nn.Embedding(config.vocab_size, d)
        self.pos = nn.Embedding(config.max_position_embeddings, d) if config.position == "learned" else None
        self.seg = nn.Embedding(config.type_vocab_size, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(ObjbenchBlock(config) for _ in range(config.num_hidden_layers))
        self.ln_f = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.head_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.tok

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.tok = value

    def attention(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """bool (B, 1, T, T): the reading pattern over real keys; padding attends to itself,
        exactly as objbench pads a batch."""
        T = attention_mask.shape[1]
        real = attention_mask.bool()
        allowed = torch.ones(T, T, dtype=torch.bool, device=real.device)
        if self.config.reading_attention == "causal":
            allowed = allowed.tril()
        mask = allowed & real[:, None, :]
        return (mask | torch.eye(T, dtype=torch.bool, device=real.device))[:, None]

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None,
               position_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every layer's output (embeddings first, the last one final-normed), as objbench's
        ``Encoder(..., all_layers=True)``. Positions count from the first real token, so left
        padding (generation) reads as right padding does."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            first = attention_mask.int().argmax(1, keepdim=True)
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            position_ids = (positions - first).clamp(min=0)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if self.pos is None:
            x = self.tok(input_ids) + self.seg(token_type_ids)
            rot = rotary(position_ids, self.config.hidden_size // self.config.num_attention_heads)
        else:
            x, rot = self.tok(input_ids) + self.pos(position_ids) + self.seg(token_type_ids), None
        x = self.drop(x)
        mask = self.attention(attention_mask)
        layers = [x]
        for block in self.blocks:
            x = block(x, mask, rot)
            layers.append(x)
        layers[-1] = self.ln_f(x)
        return layers

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM logits: the head is tied to the token embeddings and has its own bias."""
        return F.linear(hidden, self.tok.weight, self.head_bias)

    def pooled(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The sentence state: at the first real token ([CLS]), at the last one, or the mean over
        the real tokens after [CLS] (padding may be on either side)."""
        B, T = hidden.shape[:2]
        rows = torch.arange(B, device=hidden.device)
        real = torch.ones(B, T, dtype=torch.int, device=hidden.device) if attention_mask is None \
            else attention_mask.int()
        first = real.argmax(1)
        if self.config.pooling == "mean":
            text = real.clone()
            text[rows, first] = 0
            weights = text.to(hidden.dtype)[..., None]
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        index = first if self.config.pooling == "cls" else T - 1 - real.flip(1).argmax(1)
        return hidden[rows, index]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, **unused) -> BaseModelOutputWithPooling:
        """``unused`` takes the keywords pipelines pass to every model (``return_dict``,
        ``use_cache``): this encoder keeps no cache and always returns an output object."""
        layers = self.encode(input_ids, attention_mask, token_type_ids, position_ids)
        return BaseModelOutputWithPooling(
            last_hidden_state=layers[-1], pooler_output=self.pooled(layers[-1], attention_mask),
            hidden_states=tuple(layers) if output_hidden_states else None)


class _ObjbenchLM(ObjbenchModel):
    """The encoder with its LM head at every position (shared by both LM classes)."""

    def get_output_embeddings(self) -> None:
        return None  # the head reads ``tok.weight`` itself: nothing separate to tie

    def _lm(self, input_ids, attention_mask, token_type_ids, position_ids, labels,
            output_hidden_states) -> tuple:
        layers = self.encode(input_ids, attention_mask, token_type_ids, position_ids)
        logits = self.logits(layers[-1])
        loss = None if labels is None else \
            self.loss_function(logits, labels, vocab_size=self.config.vocab_size)
        return loss, logits, tuple(layers) if output_hidden_states else None


class ObjbenchForMaskedLM(_ObjbenchLM):
    """Logits at every position under bidirectional reading: a ``[MASK]`` at position i
    predicts the token there (``labels`` unshifted, -100 ignored)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                **unused) -> MaskedLMOutput:
        loss, logits, hidden = self._lm(input_ids, attention_mask, token_type_ids, position_ids,
                                        labels, output_hidden_states)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=hidden)


class ObjbenchForCausalLM(_ObjbenchLM, GenerationMixin):
    """Logits at every position under causal reading: position i predicts token i + 1
    (``labels`` are the inputs; the loss shifts them). ``[CLS]`` is the BOS token."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                **unused) -> CausalLMOutput:
        loss, logits, hidden = self._lm(input_ids, attention_mask, token_type_ids, position_ids,
                                        labels, output_hidden_states)
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=hidden)
