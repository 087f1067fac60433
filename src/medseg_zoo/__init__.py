"""medseg-zoo: a model zoo for 3D medical image segmentation.

```python
from medseg_zoo import create_model, predict, Trainer, TrainConfig
model = create_model("segresnet_brats", pretrained=True)
predict(model, "case.nii.gz", output="seg.nii.gz")
Trainer(create_model("unet_brats"), "Task01_BrainTumour", TrainConfig(output="runs/unet")).fit()
```
"""

from medseg_zoo import models  # noqa: F401  (registers the zoo's configurations)
from medseg_zoo._contract import ModelConfig, TaskContract, WeightSource
from medseg_zoo._factory import create_ensemble, create_model
from medseg_zoo._registry import list_models, model_info, register_model
from medseg_zoo._version import __version__
from medseg_zoo.checkpoints import convert_checkpoint
from medseg_zoo.errors import (
    DeviceError,
    InvalidArgumentError,
    InvalidOverrideError,
    LicenseError,
    MedsegZooError,
    MissingExtraError,
    OutputError,
    PretrainedUnavailableError,
    TrainingError,
    UnknownModelError,
    WeightsError,
)
from medseg_zoo.hub import CheckpointError, HubError, from_pretrained, push_to_hub, save_pretrained
from medseg_zoo.inference import InputError, Predictor, predict
from medseg_zoo.planning import Plan, plan
from medseg_zoo.training import TrainConfig, Trainer

__all__ = [
    "CheckpointError",
    "DeviceError",
    "HubError",
    "InputError",
    "InvalidArgumentError",
    "InvalidOverrideError",
    "LicenseError",
    "MedsegZooError",
    "MissingExtraError",
    "ModelConfig",
    "OutputError",
    "Plan",
    "Predictor",
    "PretrainedUnavailableError",
    "TaskContract",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "UnknownModelError",
    "WeightSource",
    "WeightsError",
    "__version__",
    "convert_checkpoint",
    "create_ensemble",
    "create_model",
    "from_pretrained",
    "list_models",
    "model_info",
    "plan",
    "predict",
    "push_to_hub",
    "register_model",
    "save_pretrained",
]
