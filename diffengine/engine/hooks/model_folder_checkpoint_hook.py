"""Save a self-contained model folder (a bridge, or a diffusers folder) next to every checkpoint."""

from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from diffengine.constants import BRIDGE_FOLDER, PRETRAINED_FOLDER
from diffengine.file_writes import remove_folder, whole_folder, write_text_whole
from diffengine.registry import HOOKS
from diffengine.work_dirs import latest_pointer, model_folder, model_folders_in

from ..model_wrapper import unwrap_model


@HOOKS.register_module()
class ModelFolderCheckpointHook(Hook):
    """Writes ``WORK_DIR/<folder>/iter_N/`` whenever MMEngine saves a checkpoint; keeps the last K.

    The folder is written by ``model.<save_method>(directory, iteration=N)``, under a temporary
    name and then renamed, and older ones are renamed before they are deleted, so a crash never
    leaves a half-written or half-deleted ``iter_N`` behind;
    ``<folder>/last_<folder>`` holds the newest one's folder name.

    Args:
        max_keep: how many of these folders to keep.
        folder: the work-dir subfolder they go to.
        save_method: the model's method that writes one (``save_pretrained`` writes a
            diffusers folder for ``StableDiffusion`` and ``AutoencoderKLTrainer``).
    """

    priority = "VERY_LOW"

    def __init__(self, max_keep: int = 3, folder: str = PRETRAINED_FOLDER,
                 save_method: str = "save_pretrained"):
        if max_keep < 1:
            raise ValueError(f"max_keep must be >= 1, got {max_keep}")
        self.max_keep = max_keep
        self.folder = folder
        self.save_method = save_method

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Save the folder of the iteration this checkpoint records."""
        if not is_main_process():
            return
        iteration = checkpoint["meta"]["iter"]
        final = model_folder(runner.work_dir, self.folder, iteration)
        with whole_folder(final) as staging:
            getattr(unwrap_model(runner.model), self.save_method)(staging, iteration=iteration)
        # the folder name, not a path: a moved or copied work dir still finds its newest folder
        write_text_whole(latest_pointer(runner.work_dir, self.folder), final.name)
        for old in model_folders_in(runner.work_dir, self.folder)[:-self.max_keep]:
            remove_folder(old)


@HOOKS.register_module()
class BridgeCheckpointHook(ModelFolderCheckpointHook):
    """``WORK_DIR/bridge/iter_N/`` bridge folders (``LaViBridge.save_bridge``) and ``bridge/last_bridge``.

    Before training it tells the model the loader's ``train_dataloader.resolution``, which each
    bridge records: its samples (infer, eval, export) default to that size, not the native one.
    """

    def __init__(self, max_keep: int = 3):
        super().__init__(max_keep, folder=BRIDGE_FOLDER, save_method="save_bridge")

    def before_train(self, runner) -> None:
        """Record the training resolution on the model (a loader without one leaves it as it is)."""
        resolution = (runner.cfg.get("train_dataloader") or {}).get("resolution")
        if isinstance(resolution, int) and not isinstance(resolution, bool):
            unwrap_model(runner.model).trained_resolution = resolution
