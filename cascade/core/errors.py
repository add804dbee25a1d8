"""User-facing errors: each message names the problem and how to fix it."""


class CascadeError(Exception):
    """An error caused by input or configuration; the CLI prints it without a traceback."""


class ConfigError(CascadeError, ValueError):
    """A stage or pipeline was configured with an invalid value."""


class DataError(CascadeError, ValueError):
    """A dataset file is missing or malformed."""


class NeedsCandidatesError(CascadeError, ValueError):
    """A reranking stage was given no candidates to rerank."""


class CorruptArtifactError(CascadeError):
    """A cached artifact is incomplete or damaged; the message names the folder to delete."""
