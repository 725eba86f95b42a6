"""Render fixed prompts before training and every N iterations, as PNG grids and to visualizers."""
from pathlib import Path

import numpy as np
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from PIL import Image

from diffengine.constants import SAMPLES_FOLDER
from diffengine.errors import NonFiniteImagesError
from diffengine.file_writes import whole_file
from diffengine.models.vision.samplers import check_sampling_options
from diffengine.registry import HOOKS

from ..model_wrapper import infers_on_this_rank, text_to_image_model
from ..stop_signal import stopping


def image_grid(images: list[Image.Image]) -> Image.Image:
    """Paste same-size images side by side."""
    width, height = images[0].size
    grid = Image.new("RGB", (width * len(images), height))
    for index, image in enumerate(images):
        grid.paste(image, (index * width, 0))
    return grid


@HOOKS.register_module()
class VisualizationHook(Hook):
    """Samples ``prompts`` with ``model.infer`` and saves ``WORK_DIR/samples/iter_N.png``.

    Every configured MMEngine visualizer backend (local, TensorBoard, ...) also receives the grid.
    """

    # after the checkpoint hooks (VERY_LOW) of the same iteration: sampling that fails (out of
    # memory at a large size) or outlasts a stop's grace period loses no checkpoint
    priority = "LOWEST"

    def __init__(self, prompts: list[str], interval: int = 1000, negative_prompt: str = "",
                 num_inference_steps: int = 50, guidance_scale: float = 7.5,
                 height: int | None = None, width: int | None = None, seed: int = 0,
                 scheduler: str | None = None):
        if not prompts:
            raise ValueError("VisualizationHook needs at least one prompt")
        check_sampling_options(num_inference_steps, guidance_scale, height, width, scheduler, seed,
                               negative_prompt)
        self.prompts = list(prompts)
        self.interval = interval
        self.infer_kwargs = dict(negative_prompt=negative_prompt,
                                 num_inference_steps=num_inference_steps,
                                 guidance_scale=guidance_scale, height=height, width=width,
                                 seed=seed, scheduler=scheduler)
        self._last_step = -1

    def _render(self, runner, step: int) -> None:
        if step == self._last_step or not infers_on_this_rank(runner.model):
            return
        self._last_step = step
        model = text_to_image_model(runner.model, type(self).__name__)
        try:
            grid = image_grid(model.infer(self.prompts, **self.infer_kwargs))
        except NonFiniteImagesError as error:  # the optimizer's guard decides whether training goes on
            runner.logger.warning(f"sample grid of iteration {step} not written: {error}")
            return
        if not is_main_process():  # it took part in a sharded forward; rank 0 writes
            return
        out_dir = Path(runner.work_dir) / SAMPLES_FOLDER
        out_dir.mkdir(parents=True, exist_ok=True)
        with whole_file(out_dir / f"iter_{step}.png") as partial:
            grid.save(partial)
        runner.visualizer.add_image("samples", np.asarray(grid), step=step)

    def before_train(self, runner) -> None:
        """Samples from the untrained bridge, the baseline to compare against."""
        self._render(runner, runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Samples every ``interval`` iterations."""
        if not stopping(runner) and self.every_n_train_iters(runner, self.interval):
            self._render(runner, runner.iter + 1)

    def after_train(self, runner) -> None:
        """Samples from the final bridge."""
        if not stopping(runner):
            self._render(runner, runner.iter)
