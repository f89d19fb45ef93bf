"""What song models can do is declared once (`pipeline.song_contracts`): every model a pool may
serve is declared, each engine carries its declaration, and the declaration says what the engine
really does. The API and the router read it instead of comparing model names."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from pipeline.engines.sketch import SketchSongModel
from pipeline.song_contracts import SONG_MODELS, SongModelCapabilities, capabilities_of
from serve.config import DecoderPoolConfig, resolve_config
from tests.http_graph import api_client


def test_every_servable_model_is_declared() -> None:
    servable = typing.get_args(DecoderPoolConfig.model_fields["model"].annotation)
    assert set(servable) == set(SONG_MODELS)
    # A model no pool serves (an old record's) can do nothing extra.
    assert capabilities_of("retired-model") == SongModelCapabilities()


def test_sketch_does_what_it_declares() -> None:
    assert SketchSongModel.capabilities is SONG_MODELS["sketch"]
    assert SketchSongModel.capabilities.exact_stems and hasattr(SketchSongModel, "render_parts")
    assert not SketchSongModel.capabilities.loras
    with pytest.raises(ValueError, match="does not take LoRAs"):
        SketchSongModel().load_lora("x", Path("x"))


def test_ace_step_does_what_it_declares() -> None:
    from pipeline.engines.ace_step import AceStepSongModel

    capabilities = AceStepSongModel.capabilities
    assert capabilities is SONG_MODELS["ace-step"]
    # LoRAs load (test_ace_step.py renders with them); no per-part renders, so no exact stems.
    assert capabilities.loras and not capabilities.exact_stems
    assert not hasattr(AceStepSongModel, "render_parts")


def test_the_api_reads_capabilities_not_names(tmp_path: Path) -> None:
    """A LoRA on a model that takes none is refused by what the model declares."""
    client, _ = api_client(resolve_config({"storage": {"data_dir": str(tmp_path)}}))
    refused = client.post(
        "/v1/songs", json={"prompt": "p", "model": "sketch", "lora": {"id": "style"}}
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "lora.id"
    assert "does not take LoRAs" in refused.json()["error"]["message"]
