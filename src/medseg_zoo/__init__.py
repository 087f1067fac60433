"""medseg-zoo: a model zoo for 3D medical image segmentation.

```python
from medseg_zoo import create_model, list_models
model = create_model("unetr_brats")
```
"""

from medseg_zoo import models  # noqa: F401  (registers the zoo's configurations)
from medseg_zoo._contract import ModelConfig, TaskContract, WeightSource
from medseg_zoo._download import WeightsError
from medseg_zoo._factory import create_model
from medseg_zoo._registry import list_models, model_info, register_model
from medseg_zoo.errors import (
    InvalidOverrideError,
    MedsegZooError,
    PretrainedUnavailableError,
    UnknownModelError,
)
from medseg_zoo.hub import CheckpointError, from_pretrained, push_to_hub, save_pretrained
from medseg_zoo.inference import InputError, Predictor, predict

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "InputError",
    "InvalidOverrideError",
    "MedsegZooError",
    "ModelConfig",
    "Predictor",
    "PretrainedUnavailableError",
    "TaskContract",
    "UnknownModelError",
    "WeightSource",
    "WeightsError",
    "__version__",
    "create_model",
    "from_pretrained",
    "list_models",
    "model_info",
    "predict",
    "push_to_hub",
    "register_model",
    "save_pretrained",
]
