import pytest
from pydantic import ValidationError

from shared.schemas import InputLimits, JobCreate
from shared.states import Task

LIMITS = {"limits": InputLimits(max_text_chars=20, max_items_per_job=3, max_document_chars=100)}


def parse(data):
    return JobCreate.model_validate(data, context=LIMITS)


def test_single_text_and_summarization_alias():
    job = parse({"task": "summarization", "input": {"text": "hello"}})
    assert job.task is Task.SUMMARIZE
    assert job.input.all_texts() == ["hello"]


def test_options_keep_only_what_was_given():
    job = parse({"task": "summarize", "input": {"texts": ["a"]}, "options": {"num_beams": 2}})
    assert job.options == {"num_beams": 2}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"task": "translate", "input": {"texts": ["a"]}}, "unknown task"),
        ({"task": "sentiment"}, "input"),
        ({"task": "sentiment", "input": {}}, "exactly one"),
        ({"task": "sentiment", "input": {"texts": []}}, "at least one"),
        ({"task": "sentiment", "input": {"texts": ["a", "  "]}}, "texts[1]"),
        ({"task": "sentiment", "input": {"texts": ["x" * 21]}}, "TEXTQ_MAX_TEXT_CHARS"),
        ({"task": "sentiment", "input": {"texts": ["a"] * 4}}, "TEXTQ_MAX_ITEMS_PER_JOB"),
        ({"task": "sentiment", "input": {"texts": ["a"]}, "options": {"x": 1}}, "x"),
        ({"task": "summarize", "input": {"texts": ["a"]}, "options": {"num_beams": "4"}}, "int"),
        (
            {
                "task": "summarize",
                "input": {"texts": ["a"]},
                "options": {"min_length": 9, "max_length": 3},
            },
            "min_length",
        ),
        ({"task": "sentiment", "input": {"texts": ["a"]}, "extra": True}, "extra"),
        ({"task": "sentiment", "input": {"texts": [1]}}, "string"),
    ],
)
def test_bad_submissions_say_what_is_wrong(data, fragment):
    with pytest.raises(ValidationError) as raised:
        parse(data)
    assert fragment in str(raised.value)


def sentiment_with(options):
    return parse({"task": "sentiment", "input": {"texts": ["a"]}, "options": options})


def test_categories_are_kept_stripped_and_insights_only_when_asked():
    job = sentiment_with({"categories": [" billing", "shipping "], "insights": True})
    assert job.options == {"categories": ["billing", "shipping"], "insights": True}
    assert sentiment_with({"insights": True}).options == {"insights": True}
    assert sentiment_with({"categories": ["billing"], "insights": False}).options == {
        "categories": ["billing"]
    }


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"categories": []}, "1 to 50 names, not 0"),
        ({"categories": [f"c{n}" for n in range(51)]}, "1 to 50 names, not 51"),
        ({"categories": ["billing", "  "]}, "categories[1] must not be empty"),
        ({"categories": ["b" * 101]}, "categories[0] is 101 characters; the limit is 100"),
        (
            {"categories": ["billing", "shipping", " Billing"]},
            "categories[2] 'Billing' repeats categories[0] 'billing' (names are compared ignoring",
        ),
        ({"categories": ["a\x00b"]}, "NUL"),
        ({"categories": "billing"}, "list"),
        ({"categories": ["billing", 3]}, "string"),
        ({"insights": "yes"}, "bool"),
    ],
)
def test_bad_categories_say_what_is_wrong(options, fragment):
    with pytest.raises(ValidationError) as raised:
        sentiment_with(options)
    assert fragment in str(raised.value)


def test_summaries_take_no_categories():
    with pytest.raises(ValidationError, match="categories"):
        parse({"task": "summarize", "input": {"text": "a"}, "options": {"categories": ["x"]}})
