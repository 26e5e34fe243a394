"""Configuration of an encoder trained with objbench and exported by `objbench export`.

This file is written into every exported folder and loaded by transformers with
``trust_remote_code=True``; it needs nothing but transformers.
"""

from transformers import PretrainedConfig


class ObjbenchConfig(PretrainedConfig):
    """objbench's ``model`` settings under transformers' names, plus the objective's reading.

    ``reading_attention`` ("bidirectional" or "causal") is the attention pattern the objective
    reads features and scores under; ``pooling`` ("cls", "last" or "mean" over the text tokens)
    gives the sentence representation (``pooler_output``) from the final states. ``position``
    is "learned" (position embeddings) or "rope" (rotary positions on queries and keys).
    """

    model_type = "objbench"

    def __init__(self, vocab_size: int = 8192, hidden_size: int = 128, num_hidden_layers: int = 2,
                 num_attention_heads: int = 4, intermediate_size: int = 512,
                 max_position_embeddings: int = 512, type_vocab_size: int = 2, dropout: float = 0.0,
                 layer_norm_eps: float = 1e-5, reading_attention: str = "bidirectional",
                 pooling: str = "cls", objective: str = "", position: str = "learned", **kwargs) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.dropout = dropout
        self.layer_norm_eps = layer_norm_eps
        self.reading_attention = reading_attention
        self.pooling = pooling
        self.objective = objective
        self.position = position
        super().__init__(**kwargs)
