"""Error types that carry a clear message: what is wrong and how to fix it.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""

import sys

from tqdm.auto import tqdm


class ObjbenchError(Exception):
    """Base class for user-facing errors."""


class ConfigError(ObjbenchError):
    """A config, study file or option is invalid."""


class DataError(ObjbenchError):
    """A corpus, archive or probe data set is missing, corrupt or unusable."""


class EmptyInputError(DataError):
    """A sentence a task reads has no tokens after tokenisation."""


class CheckpointError(ObjbenchError):
    """A checkpoint is missing, incomplete or does not match the run."""


class DamagedCheckpoint(CheckpointError):
    """A checkpoint's files do not match the hashes recorded when it was written."""


class PluginError(ObjbenchError):
    """A registered objective or task is unknown or broken."""


class ExportError(ObjbenchError):
    """A run cannot be exported as asked (its reading has no transformers equivalent, the
    output folder holds something else)."""


class ScoringNotApplicable(ObjbenchError):
    """The objective has no sentence score (e.g. ELECTRA's discriminator has no likelihood)."""


class TrainingDiverged(ObjbenchError):
    """The loss became NaN or infinite."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where the run stopped."""


def warn(message: str) -> None:
    """One line on stderr: something was wrong and has been dealt with (e.g. rebuilt). Written
    through tqdm, so a progress bar on screen moves below it instead of swallowing it."""
    tqdm.write(f"objbench: warning: {message}", file=sys.stderr)
