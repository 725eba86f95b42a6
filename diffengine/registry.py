"""Child registries of MMEngine's, so string ``type`` names resolve inside the ``diffengine`` scope."""
from mmengine import registry as mmengine_registry
from mmengine.registry import Registry

_LOCATIONS = {
    "model": ["diffengine.models"],
    "model_wrapper": ["diffengine.engine"],
    "optimizer wrapper constructor": ["diffengine.engine"],
    "hook": ["diffengine.engine"],
    "runner": ["diffengine.engine"],
    "loop": ["diffengine.engine"],
    "function": ["diffengine.datasets"],
}


def _child(name: str, parent: Registry) -> Registry:
    return Registry(name, parent=parent, locations=_LOCATIONS.get(name, []))


MODELS = _child("model", mmengine_registry.MODELS)
MODEL_WRAPPERS = _child("model_wrapper", mmengine_registry.MODEL_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child("optimizer wrapper constructor",
                                    mmengine_registry.OPTIM_WRAPPER_CONSTRUCTORS)
HOOKS = _child("hook", mmengine_registry.HOOKS)
RUNNERS = _child("runner", mmengine_registry.RUNNERS)
FUNCTIONS = _child("function", mmengine_registry.FUNCTIONS)
# the rest only exist so MMEngine finds its own classes from inside the diffengine scope
LOOPS = _child("loop", mmengine_registry.LOOPS)
OPTIMIZERS = _child("optimizer", mmengine_registry.OPTIMIZERS)
OPTIM_WRAPPERS = _child("optim_wrapper", mmengine_registry.OPTIM_WRAPPERS)
PARAM_SCHEDULERS = _child("parameter scheduler", mmengine_registry.PARAM_SCHEDULERS)
VISUALIZERS = _child("visualizer", mmengine_registry.VISUALIZERS)
VISBACKENDS = _child("vis_backend", mmengine_registry.VISBACKENDS)
LOG_PROCESSORS = _child("log_processor", mmengine_registry.LOG_PROCESSORS)
DATA_SAMPLERS = _child("data sampler", mmengine_registry.DATA_SAMPLERS)
