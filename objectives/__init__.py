"""What one trial does: data, backbones, model, training and metrics. Knows Keras, never Optuna.

One subpackage per layer, each naming its public API in its `__init__` (lower layers first; a
layer imports only the ones above it in this list, and only through their `__init__`):

- `config`: TrialConfig and the backbone registry
- `metrics`: numbers about predictions (metrics, intervals, calibration, ties), no Keras
- `images`: image formats, folders and manifests, splits, decoded arrays and the array cache
- `model`: how a trial trains (`plan_trial`), the one model builder, layers, saved models
- `training`: `train_trial`, the fit loop, feature caches, the Keras session, worker options
- `evaluation`: predicting, evaluating and explaining saved models, ranking backbones

`_errors` (the error classes), `_keras` (the quiet Keras import) and `_text` (reading text files,
quoting user values in errors) sit below them all. Importing this package, or any subpackage,
does not import TensorFlow; training and loading models do."""

from ._errors import BackboneError, ConfigError, DataError, ObjectiveError, TrainingDiverged
from ._keras import import_keras
from ._text import quoted, read_text_file, shown_path
from .config import DEFAULT_CONFIG, TrialConfig
from .training import TrialResult, train_trial

__all__ = [
    "BackboneError",
    "ConfigError",
    "DEFAULT_CONFIG",
    "DataError",
    "ObjectiveError",
    "TrainingDiverged",
    "TrialConfig",
    "TrialResult",
    "import_keras",
    "quoted",
    "read_text_file",
    "shown_path",
    "train_trial",
]
