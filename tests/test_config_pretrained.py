"""The config's rules for the pretrained kinds, checked before Ray starts, with the key named."""

from __future__ import annotations

import pytest

from genre_ray.config import ConfigError, parse_config


def _cfg(**features: object) -> dict:
    return {"features": {"kind": "musicnn_msd", **features}, "model": {"name": "svm"}}


def test_a_head_that_takes_no_vectors_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model\.name: does not take musicnn_msd features"):
        parse_config({"features": {"kind": "musicnn_msd"}, "model": {"name": "cnn2d"}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"model\.name: does not take musicnn_mel"):
        parse_config({"features": {"kind": "musicnn_mel"}, "model": {"name": "svm"}}, "x.yaml")
    assert parse_config({"features": {"kind": "musicnn_mel"}, "model": {"name": "pretrained"}}, "x.yaml")


def test_layer_pool_and_clip_length_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"x\.yaml: features\.embedding_layer: vgg_msd has no penultimate"):
        parse_config({"features": {"kind": "vgg_msd", "embedding_layer": "penultimate"},
                      "model": {"name": "svm"}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"features\.embedding_pool"):
        parse_config(_cfg(embedding_pool="median"), "x.yaml")
    with pytest.raises(ConfigError, match=r"features\.clip_seconds: must be at least 2\.976 .* for musicnn_msd"):
        parse_config(_cfg(clip_seconds=2.0), "x.yaml")
    cfg = parse_config(_cfg(embedding_layer="taggram", embedding_pool="mean_std"), "x.yaml")
    assert cfg.feature_settings()["embedding_layer"] == "taggram"


def test_finetune_choices_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"model\.params\.finetune"):
        parse_config({"features": {"kind": "musicnn_mel"}, "model": {"name": "pretrained",
                                                                      "params": {"finetune": "some"}}}, "x.yaml")
    cfg = parse_config({"features": {"kind": "musicnn_mel"}, "model": {
        "name": "pretrained", "params": {"finetune": {"choice": ["frozen", "last", "all"]}}}}, "x.yaml")
    assert cfg.model["params"]["backbone"] == "musicnn_msd"


def test_the_shipped_spaces_validate() -> None:
    from pathlib import Path

    from genre_ray.config import load_config

    for space in ("embeddings", "zoo"):
        cfg = load_config(Path(__file__).resolve().parents[1] / "search_spaces" / f"{space}.yaml")
        assert "musicnn_msd" in cfg.feature_kinds
