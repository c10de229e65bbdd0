"""Error types. Every error a user can cause derives from NetcompressError, so the CLI can print
one clear line (naming the thing and the fix) instead of a stack trace from deep inside."""


class NetcompressError(Exception):
    """Base of all user-facing errors."""


class ConfigError(NetcompressError, ValueError):
    """A configuration value is out of range, of the wrong type, or unknown."""


class DataError(NetcompressError):
    """A data set is missing, malformed or of the wrong shape."""


class ModelError(NetcompressError):
    """A model name is unknown, a layer is unsupported, or a shape does not fit the model."""


class CheckpointError(NetcompressError):
    """A checkpoint or weights file is missing, truncated, corrupt, or does not fit the model."""


class OutputExistsError(NetcompressError):
    """An output path exists and would be overwritten without --force."""


class DependencyError(NetcompressError, ImportError):
    """An optional package that a feature needs is not installed (the message names the install command)."""


class OutputError(NetcompressError):
    """An output cannot be written (no permission, read-only file system, a directory in the way...)."""


class DiskFullError(OutputError):
    """The file system holding an output is full (ENOSPC) or over quota (EDQUOT)."""


class RunLockedError(NetcompressError):
    """Another netcompress process is writing the same run directory."""
