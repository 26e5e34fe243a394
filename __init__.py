"""objbench: head-to-head studies of language-model pre-training objectives."""

__version__ = "0.1.0"
