"""Error types that carry a clear message: what is wrong and how to fix it.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""


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


class PluginError(ObjbenchError):
    """A registered objective or task is unknown or broken."""


class TrainingDiverged(ObjbenchError):
    """The loss became NaN or infinite."""
