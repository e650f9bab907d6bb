"""The typed configuration tree and its loading from recipes, TOML files and overrides."""

from hone.config.components import (
    model_config_class,
    model_config_classes,
    register_data_config,
    register_model_config,
    register_optim_config,
    register_section,
    register_train_part,
)
from hone.config.fields import opt
from hone.config.loader import (
    apply_override,
    field_help,
    from_dict,
    load_config,
    recipe_names,
    to_dict,
    to_toml,
    validate,
)
from hone.config.schema import (
    Config,
    DataConfig,
    DistConfig,
    LogConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RegConfig,
    ScheduleConfig,
    TrainConfig,
)

__all__ = [
    "Config",
    "DataConfig",
    "DistConfig",
    "LogConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RegConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_override",
    "field_help",
    "from_dict",
    "load_config",
    "model_config_class",
    "model_config_classes",
    "opt",
    "recipe_names",
    "register_data_config",
    "register_model_config",
    "register_optim_config",
    "register_section",
    "register_train_part",
    "to_dict",
    "to_toml",
    "validate",
]
