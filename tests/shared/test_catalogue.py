"""The models file: what it accepts, and what it says about what it does not."""

import pytest

from shared.catalogue import CatalogueError, default_name, load_file, parse
from shared.config import Settings
from shared.states import Task

GOOD = {
    "sentiment": {
        "sst2": {"source": "org/sst2", "default": True, "shadow": "v2", "shadow_fraction": 0.1},
        "v2": {"source": "/models/v2", "revision": "abc"},
    },
    "summarization": {"bart": {"source": "facebook/bart-large-cnn", "default": True}},
}


def test_a_good_file_names_each_model_of_each_task():
    catalogue = parse(GOOD, origin="models.toml")
    assert catalogue.names(Task.SENTIMENT) == ["sst2", "v2"]
    assert catalogue.default(Task.SUMMARIZE).source == "facebook/bart-large-cnn"
    assert catalogue.choose(Task.SENTIMENT, None).name == "sst2"
    assert catalogue.choose(Task.SENTIMENT, "v2").revision == "abc"
    assert catalogue.by_name["sst2"].shadow_fraction == 0.1


def test_a_name_of_another_task_or_none_lists_the_tasks_models():
    catalogue = parse(GOOD, origin="models.toml")
    for name in ("bart", "nope"):
        with pytest.raises(LookupError, match="'sst2', 'v2'"):
            catalogue.choose(Task.SENTIMENT, name)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"translate": {"x": {"source": "a", "default": True}}}, "unknown task [translate]"),
        ({"summarize": {"bart": {"default": True}}}, "needs source"),
        (
            {
                "summarize": {
                    "a": {"source": "a", "default": True},
                    "b": {"source": "b", "default": True},
                }
            },
            "exactly one default = true, found 2 (a, b)",
        ),
        ({"summarize": {"a": {"source": "a"}}}, "found none; mark one of: a"),
        (
            {
                "summarize": {
                    "a": {"source": "a", "default": True, "shadow": "sst2", "shadow_fraction": 0.5}
                }
            },
            "shadow 'sst2' names no other summarize model",
        ),
        (
            {
                "summarize": {
                    "a": {"source": "a", "default": True},
                    "b": {"source": "b", "shadow": "a", "shadow_fraction": 0},
                }
            },
            "shadow_fraction must be a number above 0, at most 1",
        ),
        (
            {"summarize": {"a": {"source": "a", "default": True, "shadow": "twiter"}}},
            "shadow 'twiter' names no other summarize model",
        ),
        (
            {"summarize": {"a": {"source": "a", "default": True, "shadow": "a"}}},
            "shadow 'a' names no other summarize model",
        ),
        (
            {
                "summarize": {
                    "a": {"source": "a", "default": True, "shadow": "b"},
                    "b": {"source": "b"},
                }
            },
            "shadow and shadow_fraction go together",
        ),
        (
            {"summarize": {"sentiment": {"source": "a", "default": True}}},
            "cannot be named like a task",
        ),
        ({"summarize": {"sst2": {"source": "a", "default": True}}}, "names must be unique"),
        (
            {"summarize": {"a": {"source": "a", "default": True, "sorce": "x"}}},
            "unknown field 'sorce'",
        ),
    ],
)
def test_a_bad_file_says_what_is_wrong_and_what_is_accepted(change, says):
    data = {"sentiment": GOOD["sentiment"]} | change
    with pytest.raises(CatalogueError, match="models file models.toml: .*" + _escaped(says)):
        parse(data, origin="models.toml")


def _escaped(text: str) -> str:
    import re

    return re.escape(text)


def test_a_bad_file_stops_the_settings_naming_the_variable(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text('[sentiment.a]\nsource = "x"\n')
    with pytest.raises(ValueError, match=r"(?s)models_file.*exactly one default"):
        Settings(data_dir=tmp_path, models_file=path)
    path.write_text("[sentiment.a\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_file(path)


def test_without_a_file_the_two_settings_make_one_default_per_task(tmp_path):
    settings = Settings(data_dir=tmp_path)
    catalogue = settings.catalogue
    assert catalogue.names(Task.SENTIMENT) == ["distilbert-base-uncased-finetuned-sst-2-english"]
    assert catalogue.default(Task.SUMMARIZE).name == "bart-large-cnn"
    same = Settings(data_dir=tmp_path, sentiment_model="/m/model", summarization_model="/n/model")
    assert same.catalogue.names(Task.SENTIMENT) == ["sentiment-model"]
    # A directory named after the other task would make that task's name mean two models.
    crossed = Settings(
        data_dir=tmp_path, sentiment_model="/m/summarize", summarization_model="/n/bart"
    )
    assert crossed.catalogue.names(Task.SENTIMENT) == ["sentiment-summarize"]
    own = Settings(data_dir=tmp_path, sentiment_model="/m/sentiment", summarization_model="/n/b")
    assert own.catalogue.names(Task.SENTIMENT) == ["sentiment"]
    assert default_name("/models/my model/") == "my-model"
