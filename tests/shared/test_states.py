from shared.states import (
    ITEM_TRANSITIONS,
    JOB_TRANSITIONS,
    TERMINAL_ITEM_STATUSES,
    TERMINAL_JOB_STATUSES,
    ItemStatus,
    JobStatus,
    Task,
    job_sources,
    outcome_status,
)


def test_terminal_states_never_change_but_to_expire():
    for status in TERMINAL_JOB_STATUSES:
        assert JOB_TRANSITIONS[status] <= {JobStatus.EXPIRED}
    assert JOB_TRANSITIONS[JobStatus.EXPIRED] == frozenset()
    assert JobStatus.EXPIRED not in JOB_TRANSITIONS[JobStatus.QUEUED]
    for status in TERMINAL_ITEM_STATUSES:
        assert ITEM_TRANSITIONS[status] == frozenset()


def test_jobs_never_go_back_to_queued():
    assert job_sources(JobStatus.QUEUED) == frozenset()
    assert job_sources(JobStatus.RUNNING) == {JobStatus.QUEUED}


def test_a_finished_item_is_never_claimed_again():
    assert ItemStatus.RUNNING not in set().union(
        *(ITEM_TRANSITIONS[s] for s in TERMINAL_ITEM_STATUSES)
    )


def test_outcome_status_follows_the_counts():
    assert outcome_status(done=3, errored=0) is JobStatus.SUCCEEDED
    assert outcome_status(done=0, errored=2) is JobStatus.FAILED
    assert outcome_status(done=1, errored=1) is JobStatus.PARTIAL


def test_task_accepts_the_pipeline_names():
    assert Task.parse("summarization") is Task.SUMMARIZE
    assert Task.parse("sentiment-analysis") is Task.SENTIMENT
    assert Task.parse("summarize") is Task.SUMMARIZE
