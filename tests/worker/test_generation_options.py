"""A summary's decoding options: what the model cannot honour is refused, and what a worker
records of its model is what the API checks."""

from shared import worker_registry
from shared.model_limits import UNFIT_OPTIONS, ModelLimits
from shared.states import Task
from tests.worker.test_engine import items, load, run_all
from worker.engine import BatchLimits, SummarizeRunner
from worker.main import list_this_worker

STORY = "The parcel arrived late and the box was damaged."


def summarizer(model_dirs):
    return SummarizeRunner(
        load(model_dirs.summarization, Task.SUMMARIZE), BatchLimits(max_tokens=4096, max_size=4)
    )


def test_a_loaded_summarizer_knows_how_long_a_summary_its_decoder_allows(model_dirs):
    loaded = load(model_dirs.summarization, Task.SUMMARIZE)
    assert loaded.model.config.max_position_embeddings == 1024
    assert loaded.limits == ModelLimits(max_input_tokens=512, max_output_tokens=1024)
    assert load(model_dirs.sentiment, Task.SENTIMENT).limits.max_output_tokens is None


def test_lengths_past_the_decoder_fail_the_item_with_the_limit_not_an_index_error(model_dirs):
    runner = summarizer(model_dirs)
    for options in ({"min_length": 1100, "max_length": 1200}, {"max_length": 2000}):
        (outcome,) = run_all(runner, items([STORY], options)).values()
        assert outcome.result is None
        assert outcome.error.startswith(UNFIT_OPTIONS), outcome.error
        assert "at most 1,024" in outcome.error
        assert "IndexError" not in outcome.error


def test_a_min_length_above_the_models_own_max_length_is_honoured(model_dirs):
    runner = summarizer(model_dirs)
    model_max = runner.loaded.model.generation_config.max_length
    config = runner.generation_config({"min_length": model_max + 10})
    assert config.max_length >= config.min_length == model_max + 10
    (outcome,) = run_all(runner, items([STORY], {"min_length": model_max + 10})).values()
    tokens = runner.loaded.tokenizer(outcome.result["summary_text"], add_special_tokens=False)
    assert len(tokens["input_ids"]) > model_max


def test_every_accepted_option_runs(model_dirs):
    runner = summarizer(model_dirs)
    for options in (
        {"num_beams": 16, "max_length": 8},
        {"do_sample": True, "num_beams": 3, "max_length": 8},
        {"min_length": 8, "max_length": 8},
        {"max_length": 2, "min_length": 0},
    ):
        (outcome,) = run_all(runner, items([STORY], options)).values()
        assert outcome.error is None, (options, outcome.error)


def test_a_worker_records_its_models_limits_for_the_api(runtime, db, settings):
    list_this_worker(runtime)
    with db.read() as session:
        limits = worker_registry.limits_of_live_workers(
            session,
            task=Task.SUMMARIZE.value,
            model=settings.summarization_model,
            sweep_interval_s=settings.sweep_interval_s,
        )
    assert limits == ModelLimits(max_input_tokens=512, max_output_tokens=1024)
