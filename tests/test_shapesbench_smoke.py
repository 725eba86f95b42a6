"""The test that fails if bridges stop learning: the demo's ShapesBench run with a negative control."""
from collections import Counter

import pytest

from diffengine.engine import ShapesBenchHook
from diffengine.evaluation.shapes_benchmark import evaluate_shapes, model_generator, prompt_sets
from diffengine.tools.shapesbench import STAGE1_ASSET
from diffengine.tools.train import run, train_arguments

from .helpers import adapter_output_zeroed


@pytest.mark.slow
def test_a_trained_bridge_follows_the_text_and_a_cut_one_does_not(tiny_t5, tmp_path):
    """The packaged demo config (a random tiny T5, 250 iterations) on the packaged stage-1 model.

    Trained, the bridge must beat its untrained self clearly on both held-out sets; with the
    adapter's output replaced by zeros (the text cut out) the same bridge must fall back to it.
    """
    from diffengine.tools.shapes_assets import write_shape_shards

    shards = write_shape_shards(tmp_path / "shards", 2048, images_per_shard=1024, progress=False)
    runner = run(train_arguments(
        "lavi_bridge_demo", "--work-dir", str(tmp_path / "work"), "--cfg-options",
        f"model.text_encoder={tiny_t5}", f"model.vision_model={STAGE1_ASSET}",
        f"train_dataloader.shards={shards}", "experiment_name=shapesbench_smoke"), wds=True)
    floor = runner.message_hub.get_info(ShapesBenchHook.BEFORE_INFO)
    trained = runner.message_hub.get_info(ShapesBenchHook.LATEST_INFO)
    with adapter_output_zeroed(runner.model):
        cut = evaluate_shapes(model_generator(runner.model), images_per_prompt=1)
    sets = prompt_sets()

    def pooled(result: dict, score: str) -> float:
        """The score over both held-out sets' prompts together."""
        return sum(result[n][score]["mean"] * len(sets[n]) for n in sets) / sum(map(len, sets.values()))

    scores = {score: [pooled(r, score) for r in (floor, trained, cut)] for score in ("color", "all")}
    print(f"ShapesBench smoke (floor, trained, adapter output zeroed): {scores}")
    for score, margin in (("color", 0.25), ("all", 0.15)):
        before, after, control = scores[score]
        assert after >= before + margin, (score, before, after)
        assert after >= control + margin, (score, control, after)
    # cut, it ignores the prompt: it gets all three right no more often than always drawing a
    # set's most common triple would, with a little slack for the judge
    blind = max(max(Counter(p.spec for p in prompts).values()) / len(prompts)
                for prompts in sets.values())
    assert scores["all"][2] <= blind + 0.1, (blind, scores["all"])
