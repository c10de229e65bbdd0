from .errors import (CheckpointError, ConfigError, DataError, ModelError, NetcompressError,
                     OutputExistsError)
from .registry import Registry, did_you_mean

__all__ = ["CheckpointError", "ConfigError", "DataError", "ModelError", "NetcompressError",
           "OutputExistsError", "Registry", "did_you_mean"]
