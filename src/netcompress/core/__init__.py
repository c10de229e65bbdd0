"""The base every family stands on: one config base, one selection rule, one data helper, module surgery, the
verb report, and the error types."""
from .config import Config, config_types
from .errors import (CheckpointError, ConfigError, DataError, ModelError, NetcompressError,
                     OutputExistsError)
from .registry import Registry, did_you_mean
from .report import Change, Report
from .select import Selective, Skip, select_layers

__all__ = ["Change", "CheckpointError", "Config", "ConfigError", "DataError", "ModelError", "NetcompressError",
           "OutputExistsError", "Registry", "Report", "Selective", "Skip", "config_types", "did_you_mean",
           "select_layers"]
