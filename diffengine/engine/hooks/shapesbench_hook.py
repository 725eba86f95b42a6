"""Score the model on ShapesBench's held-out prompts before training, every N iterations and at the end."""
from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from diffengine.constants import SHAPESBENCH_GUIDANCE, SHAPESBENCH_STEPS
from diffengine.errors import NonFiniteImagesError
from diffengine.models.vision.samplers import check_sampling_options
from diffengine.registry import HOOKS

from ..model_wrapper import infers_on_this_rank, text_to_image_model
from ..stop_signal import stopping


@HOOKS.register_module()
class ShapesBenchHook(Hook):
    """Logs ``shapesbench/<set>/<score>`` accuracies (colour, shape, background, all three).

    The latest scores and those before training are kept in the message hub's info as
    ``shapesbench`` and ``shapesbench_before``, e.g. for ``diffengine demo`` to print.

    Args:
        interval: also score every ``interval`` iterations (None: only before and after).
        images_per_prompt: images judged per held-out prompt.
        num_inference_steps, guidance_scale: the sampler's settings.
    """

    # after the checkpoint hooks (VERY_LOW) of the same iteration: sampling that fails (out of
    # memory at a large size) or outlasts a stop's grace period loses no checkpoint
    priority = "LOWEST"
    # the message hub's info keys of the latest scores and of those before training
    LATEST_INFO = "shapesbench"
    BEFORE_INFO = "shapesbench_before"

    def __init__(self, interval: int | None = None, images_per_prompt: int = 2,
                 num_inference_steps: int = SHAPESBENCH_STEPS, guidance_scale: float = SHAPESBENCH_GUIDANCE):
        if images_per_prompt < 1:
            raise ValueError(f"images_per_prompt must be >= 1, got {images_per_prompt}")
        check_sampling_options(num_inference_steps, guidance_scale)
        self.interval = interval
        self.images_per_prompt = images_per_prompt
        self.sampler = dict(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
        self._last_step = -1

    def _score(self, runner, step: int) -> None:
        if step == self._last_step or not infers_on_this_rank(runner.model):
            return
        from diffengine.evaluation.shapes_benchmark import evaluate_shapes, model_generator

        self._last_step = step
        model = text_to_image_model(runner.model, type(self).__name__)
        try:
            result = evaluate_shapes(model_generator(model, **self.sampler), self.images_per_prompt)
        except NonFiniteImagesError as error:  # the optimizer's guard decides whether training goes on
            runner.logger.warning(f"ShapesBench at iteration {step} skipped: {error}")
            return
        if not is_main_process():  # it took part in a sharded forward; rank 0 reports
            return
        del result["records"]
        for set_name, summary in result.items():
            for score, value in summary.items():
                if isinstance(value, dict):
                    runner.visualizer.add_scalar(f"shapesbench/{set_name}/{score}",
                                                 value["mean"], step=step)
        cells = ", ".join(f"{set_name} all three {100 * summary['all']['mean']:.1f} %"
                          for set_name, summary in result.items())
        runner.logger.info(f"ShapesBench at iteration {step}: {cells}")
        if not runner.message_hub.get_info(self.BEFORE_INFO):
            runner.message_hub.update_info(self.BEFORE_INFO, result)
        runner.message_hub.update_info(self.LATEST_INFO, result)

    def before_train(self, runner) -> None:
        """Scores of the untrained model: the floor."""
        self._score(runner, runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Scores every ``interval`` iterations."""
        if not stopping(runner) and self.interval and self.every_n_train_iters(runner, self.interval):
            self._score(runner, runner.iter + 1)

    def after_train(self, runner) -> None:
        """Scores of the trained model."""
        if not stopping(runner):
            self._score(runner, runner.iter)
