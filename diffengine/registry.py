"""Child registries of MMEngine's, so string ``type`` names resolve inside the ``diffengine`` scope."""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import Registry

MODELS = Registry("model", parent=MMENGINE_MODELS, locations=["diffengine.models"])
MODEL_WRAPPERS = Registry(
    "model_wrapper", parent=MMENGINE_MODEL_WRAPPERS, locations=["diffengine.engine"])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    "optimizer wrapper constructor",
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    locations=["diffengine.engine"])
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, locations=["diffengine.engine"])
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, locations=["diffengine.datasets"])
FUNCTIONS = Registry("function", parent=MMENGINE_FUNCTIONS, locations=["diffengine.datasets"])
RUNNERS = Registry("runner", parent=MMENGINE_RUNNERS, locations=["diffengine.engine"])
