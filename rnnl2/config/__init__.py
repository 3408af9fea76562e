"""Run configs: the schema (`schema`, one variant per data kind in `data_kinds`) and
`load_config` (`loading`), which turns YAML plus `--set` overrides into a validated `RunConfig`.

    base ← data_kinds ← schema ← loading
"""

from ..errors import ConfigError, Rnnl2Error
from .base import FilePath, Section, expand_path
from .data_kinds import (
    DATA_KINDS,
    AddingData,
    DataConfig,
    ForecastData,
    SeedTaggingData,
    SequenceClassificationData,
    SineData,
    TextClassificationData,
    TextLMData,
)
from .loading import apply_overrides, load_config, read_yaml, validate_config
from .schema import (
    GROUPS,
    AdaptConfig,
    EarlyStoppingConfig,
    L1Config,
    L2Config,
    MaxNormConfig,
    ModelConfig,
    OptimizerConfig,
    OutputConfig,
    RegularizationConfig,
    RunConfig,
    SchedulerConfig,
    TrainConfig,
    to_plain_dict,
)

__all__ = [
    "ConfigError",
    "Rnnl2Error",
    "FilePath",
    "Section",
    "expand_path",
    "DATA_KINDS",
    "AddingData",
    "DataConfig",
    "ForecastData",
    "SeedTaggingData",
    "SequenceClassificationData",
    "SineData",
    "TextClassificationData",
    "TextLMData",
    "apply_overrides",
    "load_config",
    "read_yaml",
    "validate_config",
    "GROUPS",
    "AdaptConfig",
    "EarlyStoppingConfig",
    "L1Config",
    "L2Config",
    "MaxNormConfig",
    "ModelConfig",
    "OptimizerConfig",
    "OutputConfig",
    "RegularizationConfig",
    "RunConfig",
    "SchedulerConfig",
    "TrainConfig",
    "to_plain_dict",
]
