import shutil

import pytest
import torch

from shared.config import Settings
from shared.states import Task
from worker import model_registry


def settings_for(tmp_path, **kwargs):
    return Settings(data_dir=tmp_path, **kwargs)


def test_a_local_directory_is_pinned_by_a_hash_of_its_weights(tmp_path, model_dirs):
    copy = shutil.copytree(model_dirs.sentiment, tmp_path / "copy")
    first = model_registry.resolve(
        settings_for(tmp_path, sentiment_model=str(copy)), Task.SENTIMENT
    )
    assert first.revision.startswith("sha256:")
    again = model_registry.resolve(
        settings_for(tmp_path, sentiment_model=str(copy)), Task.SENTIMENT
    )
    assert again.revision == first.revision
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    changed = model_registry.resolve(
        settings_for(tmp_path, sentiment_model=str(copy)), Task.SENTIMENT
    )
    assert changed.revision != first.revision


def test_a_hub_cache_snapshot_keeps_its_commit_as_revision(tmp_path, model_dirs):
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = shutil.copytree(model_dirs.sentiment, tmp_path / "snapshots" / commit)
    resolved = model_registry.resolve(
        settings_for(tmp_path, sentiment_model=str(snapshot)), Task.SENTIMENT
    )
    assert resolved.revision == commit


def test_a_missing_directory_names_the_setting(tmp_path):
    with pytest.raises(model_registry.ModelUnavailable, match="TEXTQ_SUMMARIZATION_MODEL"):
        model_registry.resolve(
            settings_for(tmp_path, summarization_model=str(tmp_path / "nope")), Task.SUMMARIZE
        )


def test_an_unreachable_hub_is_one_clear_line(tmp_path):
    with pytest.raises(model_registry.ModelUnavailable) as raised:
        model_registry.resolve(
            settings_for(tmp_path, sentiment_model="some-org/some-model"), Task.SENTIMENT
        )
    message = str(raised.value)
    assert "\n" not in message
    assert "TEXTQ_SENTIMENT_MODEL" in message
    assert "some-org/some-model" in message


def test_pickled_weights_are_refused(tmp_path, model_dirs):
    legacy = shutil.copytree(model_dirs.sentiment, tmp_path / "legacy")
    (legacy / "model.safetensors").rename(legacy / "pytorch_model.bin")
    with pytest.raises(model_registry.ModelUnavailable, match="safetensors"):
        model_registry.resolve(settings_for(tmp_path, sentiment_model=str(legacy)), Task.SENTIMENT)


def test_precision_follows_the_device():
    cpu = torch.device("cpu")
    assert model_registry.pick_dtype("float32", cpu) is torch.float32
    expected = torch.bfloat16 if model_registry.cpu_has_native_bf16() else torch.float32
    assert model_registry.pick_dtype("auto", cpu) is expected
    assert model_registry.pick_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert model_registry.pick_device("auto") == cpu
        with pytest.raises(model_registry.ModelUnavailable, match="CUDA"):
            model_registry.pick_device("cuda:1")


def test_cudnn_attention_is_turned_off_only_where_a_gpu_is_picked(monkeypatch):
    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        model_registry.pick_device("cpu")
        assert torch.backends.cuda.cudnn_sdp_enabled()
        # Only the device's name is read: no GPU is needed to pick one.
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert model_registry.pick_device("cuda:0") == torch.device("cuda", 0)
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


def test_a_revision_pin_a_local_directory_cannot_honour_is_refused(tmp_path, model_dirs):
    settings = settings_for(
        tmp_path, sentiment_model=str(model_dirs.sentiment), sentiment_model_revision="v9"
    )
    with pytest.raises(model_registry.ModelUnavailable, match="'v9'"):
        model_registry.resolve(settings, Task.SENTIMENT)


def test_a_summarizer_loaded_as_a_classifier_is_refused_not_given_a_random_head(
    tmp_path, model_dirs
):
    wrong = model_registry.resolve(
        settings_for(tmp_path, sentiment_model=str(model_dirs.summarization)), Task.SENTIMENT
    )
    with pytest.raises(model_registry.ModelUnavailable, match="would be random"):
        model_registry.load(wrong, device=torch.device("cpu"), dtype=torch.float32)
