"""``--cfg-options`` values: DictAction's syntax, with the spaces and quotes a user typed kept."""
import pytest
from mmengine.config import DictAction

from diffengine.errors import ConfigError
from diffengine.tools.cfg_options import parse_cfg_options, parse_value
from diffengine.tools.train import build_config, train_arguments

# values DictAction reads right, read the same
AS_DICT_ACTION = ["1", "-1", "1e-4", "1.5", "true", "False", "None", "abc", "'abc'", "1,2,3", "1,", "[a, b, c]",
                  "[(1, 2, 3), [a, b], c]", "(1,)", "[]", "()", "[[1,2],[3]]", "/data/{00000..00003}.tar"]


@pytest.mark.parametrize("text", AS_DICT_ACTION)
def test_values_dict_action_reads_right_are_read_the_same(text):
    assert parse_value(text) == DictAction._parse_iterable(text)


@pytest.mark.parametrize("text, value", [
    ("/data/my models/t5", "/data/my models/t5"),
    ("pipe:cat /data/{00000..00003}.tar", "pipe:cat /data/{00000..00003}.tar"),
    ("[a red circle, a blue square]", ["a red circle", "a blue square"]),
    ("on white, a red circle", ["on white", "a red circle"]),
    ("['a red, round shape', \"a [blue] square\"]", ["a red, round shape", "a [blue] square"]),
    ("'1'", "1"),
    ("[' x ']", [" x "]),
    ("/data/{a,b}.tar", "/data/{a,b}.tar"),
    # a quote opens a string only at the start of an element, and only when it is closed
    ("/home/o'neil/t5", "/home/o'neil/t5"),
    ("[a dog's ball, it's]", ["a dog's ball", "it's"]),
    ("[a,'b]", ["a", "'b"]),
])
def test_spaces_quotes_and_shard_braces_are_kept(text, value):
    assert parse_value(text) == value


@pytest.mark.parametrize("pair, message", [
    ("x=[1,2", "--cfg-options 'x=[1,2': unbalanced brackets: '[' is never closed"),
    ("x=1,2]", "--cfg-options 'x=1,2]': unbalanced brackets: ']' closes nothing"),
    ("x=(1]", "--cfg-options 'x=(1]': unbalanced brackets: ']' does not close '('"),
    ("=1", "--cfg-options '=1': expected KEY=VALUE"),
    ("x", "--cfg-options 'x': expected KEY=VALUE"),
])
def test_an_unreadable_pair_is_one_line_naming_it(pair, message):
    with pytest.raises(ConfigError) as error:
        parse_cfg_options([pair])
    assert str(error.value).startswith(message)


def test_prompts_and_paths_with_spaces_reach_the_config_as_typed():
    cfg = build_config(train_arguments("lavi_bridge_demo", "--cfg-options",
                                       "custom_hooks.3.prompts=[a red circle,on white, a blue square]",
                                       "model.text_encoder=/data/my models/t5"), wds=True)
    assert cfg.custom_hooks[3].prompts == ["a red circle", "on white", "a blue square"]
    assert cfg.model.text_encoder == "/data/my models/t5"
