"""MMEngine Runner that also builds webdataset loaders from config."""
from functools import partial

from mmengine.runner import Runner
from torch.utils.data import DataLoader

from diffengine.registry import FUNCTIONS, RUNNERS

from .checkpoint import FiniteWeightsHook, PlainMessageHubHook
from .resume import ResumeOverridesHook
from .stop_signal import ignore_others_sigterm


def is_loader_builder_cfg(dataloader) -> bool:
    """True for a dataloader config naming a builder function (``type=...``), e.g. webdataset's."""
    return isinstance(dataloader, dict) and "type" in dataloader


@RUNNERS.register_module()
class DiffEngineRunner(Runner):
    """A ``Runner`` whose dataloader config may be ``dict(type=<builder>, **kwargs)``.

    MMEngine's own builder wraps a map-style dataset in a sampler; a webdataset pipeline is an
    IterableDataset whose sharding, shuffling and epoch length live in its builder instead.
    It also registers ``PlainMessageHubHook`` so its checkpoints load with ``weights_only=True``,
    ``FiniteWeightsHook`` so no checkpoint holds a NaN, and ``ResumeOverridesHook`` so a resumed
    run trains with its own configuration.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_hook(PlainMessageHubHook())
        self.register_hook(FiniteWeightsHook())
        self.register_hook(ResumeOverridesHook())

    @staticmethod
    def build_dataloader(dataloader, seed: int = 0, diff_rank_seed: bool = False):
        """Build from a builder config, or defer to MMEngine's standard dataloader config.

        A builder's stream seed comes from its own config (``seed=``), not from the runner's
        random seed, so that a resumed run reads the same stream as the run it continues. Its
        worker processes ignore a SIGTERM that the training process did not send: it stops on
        the signal itself, and ends them.
        """
        if is_loader_builder_cfg(dataloader):
            loader = FUNCTIONS.build(dict(dataloader))
        else:
            loader = Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
        if isinstance(loader, DataLoader):
            loader.worker_init_fn = partial(ignore_others_sigterm, loader.worker_init_fn)
        return loader
