"""LaMP checkpoints: round trip, and a clear error for every kind of bad folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lamp_bench.models.lamp.action_tokenizer import GRIPPER_CANONICAL, PROPRIO_DIM, ActionStats
from lamp_bench.models.lamp.checkpoint import (CheckpointError, checkpoint_kind, load_checkpoint, save_checkpoint,
                                          validate_checkpoint)
from lamp_bench.models.lamp.config import preset
from lamp_bench.models.lamp.model import build_model
from lamp_bench.models.lamp.text_tokenizer import byte_level_tokenizer, instruction_ids, prompt_ids
from lamp_bench.models.lamp.vision import ImageNormalization

STATS = {"libero_spatial": ActionStats(np.full(7, -0.5), np.full(7, 0.5), np.array([True] * 6 + [False]),
                                       GRIPPER_CANONICAL, np.full(PROPRIO_DIM, -0.2), np.full(PROPRIO_DIM, 1.2))}


def trained_like(cfg):
    """A tiny model whose LoRA and bridges are non-zero, as after training."""
    torch.manual_seed(0)
    model = build_model(cfg)
    model.add_lora()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "o_proj" in name and name.startswith("bridges."):
                p.normal_(0.0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    model = trained_like(preset("tiny"))
    path = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny", byte_level_tokenizer(), STATS)
    return path, model


def copy(saved, tmp_path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(saved[0], target)
    return target


def same_actions(model, other, tokenizer) -> bool:
    """Both models predict the same action ids for one fixed random batch (motion pathway and proprio on)."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=g)
    points = torch.rand(2, cfg.vision.num_patches, 3, generator=g) + 0.5
    x0 = 0.5 * torch.randn(2, cfg.vision.num_patches, 3, generator=g)
    ins = ["put the bowl on the plate", "open the drawer"]
    prompts = [prompt_ids(tokenizer, cfg.llm, i) for i in ins]
    instr = [instruction_ids(tokenizer, i) for i in ins]
    proprio = torch.rand(2, PROPRIO_DIM, generator=g) * 2 - 1
    return torch.equal(model.predict_action_ids(images, prompts, instr, points, x0, 1, proprio)[0],
                       other.predict_action_ids(images, prompts, instr, points, x0, 1, proprio)[0])


def test_round_trip_gives_identical_actions(saved):
    path, model = saved
    assert sorted(p.name for p in path.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "config.json", "dataset_statistics.json",
        "model.safetensors", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
    ]
    ckpt = load_checkpoint(path)
    assert ckpt.config == model.cfg and len(ckpt.sha256) == 64
    loaded_stats = ckpt.statistics["libero_spatial"]
    assert loaded_stats.gripper == GRIPPER_CANONICAL
    assert np.array_equal(loaded_stats.proprio_q99, STATS["libero_spatial"].proprio_q99)
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=g)
    points = torch.rand(2, cfg.vision.num_patches, 3, generator=g) + 0.5
    x0 = 0.5 * torch.randn(2, cfg.vision.num_patches, 3, generator=g)
    ins = ["put the bowl on the plate", "open the drawer"]
    prompts = [prompt_ids(ckpt.tokenizer, cfg.llm, i) for i in ins]
    instr = [instruction_ids(ckpt.tokenizer, i) for i in ins]
    proprio = torch.rand(2, PROPRIO_DIM, generator=g) * 2 - 1
    original, _ = model.predict_action_ids(images, prompts, instr, points, x0, 1, proprio)
    loaded, _ = ckpt.model.predict_action_ids(images, prompts, instr, points, x0, 1, proprio)
    assert torch.equal(original, loaded)
    # Not merging keeps the adapter trainable (resuming training) with the same weights.
    resumed = load_checkpoint(path, merge_lora=False).model
    assert any("lora_B" in n for n, _ in resumed.named_parameters())
    assert torch.equal(resumed.predict_action_ids(images, prompts, instr, points, x0, 1, proprio)[0], original)


def test_missing_files(saved, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    for name in ("config.json", "model.safetensors", "dataset_statistics.json", "tokenizer.json",
                 "adapter_model.safetensors"):
        folder = copy(saved, tmp_path / name)
        (folder / name).unlink()
        with pytest.raises(CheckpointError, match=f"has no {name}"):
            load_checkpoint(folder)


def test_truncated_and_forged_safetensors(saved, tmp_path):
    folder = copy(saved, tmp_path / "truncated")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load_checkpoint(folder)
    folder = copy(saved, tmp_path / "forged")
    header = b'{"x": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 4000000]}}'
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load_checkpoint(folder)
    folder = copy(saved, tmp_path / "pickle")
    (folder / "adapter_model.safetensors").write_bytes(b"\x80\x04\x95" + b"\0" * 64)  # a pickle, not safetensors
    with pytest.raises(CheckpointError, match=r"adapter_model\.safetensors: not a readable"):
        load_checkpoint(folder)


def test_config_of_another_model(saved, tmp_path):
    folder = copy(saved, tmp_path / "other")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    with pytest.raises(CheckpointError, match=r"config\.json: model_type is 'llama', not 'lamp'"):
        load_checkpoint(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_checkpoint(folder)


def test_mismatched_shapes(saved, tmp_path):
    folder = copy(saved, tmp_path / "shapes")
    config = json.loads((folder / "config.json").read_text())
    config["motion"]["hidden_size"] = 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: does not match config\.json: shape mismatches"):
        load_checkpoint(folder)
    folder = copy(saved, tmp_path / "missing")
    config = json.loads((folder / "config.json").read_text())
    config["llm"]["num_layers"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"missing keys .*layers\.4"):
        load_checkpoint(folder)
    folder = copy(saved, tmp_path / "adapter")
    adapter = json.loads((folder / "adapter_config.json").read_text())
    adapter["r"] = 4
    (folder / "adapter_config.json").write_text(json.dumps(adapter))
    with pytest.raises(CheckpointError, match=r"adapter_config\.json: adapter \(r, alpha, targets\)"):
        load_checkpoint(folder)


def test_bad_statistics(saved, tmp_path):
    folder = copy(saved, tmp_path / "stats")
    (folder / "dataset_statistics.json").write_text(json.dumps({"bridge": {"action": {"q01": [0.0] * 7}}}))
    with pytest.raises(CheckpointError, match=r"dataset_statistics\.json \[bridge\]: needs action\.q01, action\.q99"):
        load_checkpoint(folder)


def test_sharded_checkpoint_loads_the_same_model(saved, tmp_path):
    path, model = saved
    total = sum(v.numel() * v.element_size() for v in model.base_state_dict().values())
    sharded = save_checkpoint(model, tmp_path / "sharded", byte_level_tokenizer(), STATS, max_shard_size=total // 3)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) >= 3 and not (sharded / "model.safetensors").exists()
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert set(index["weight_map"].values()) == set(shards) and index["metadata"]["total_size"] == total
    assert validate_checkpoint(sharded) == model.cfg and checkpoint_kind(sharded) == "lamp"
    ckpt = load_checkpoint(sharded)
    own = ckpt.model.base_state_dict()
    assert all(torch.equal(own[k], v) for k, v in load_checkpoint(path).model.base_state_dict().items())
    assert same_actions(model, ckpt.model, ckpt.tokenizer)
    (sharded / shards[1]).unlink()
    with pytest.raises(CheckpointError, match=rf"index\.json lists shard files that are not in .*{shards[1]}"):
        validate_checkpoint(sharded)


def test_image_normalization_is_read_from_preprocessor_config(saved, tmp_path):
    folder = copy(saved, tmp_path / "normalization")
    assert load_checkpoint(folder).model.vision_backbone.normalization == ImageNormalization()
    rounded = ImageNormalization(dino_mean=(0.484375, 0.455078125, 0.40625), dino_std=(0.228515625, 0.2236328125, 0.224609375))
    (folder / "preprocessor_config.json").write_text(json.dumps(rounded.to_preprocessor_config()))
    backbone = load_checkpoint(folder).model.vision_backbone
    assert backbone.normalization == rounded
    assert torch.equal(backbone.dino_mean.flatten(), torch.tensor(rounded.dino_mean))
    (folder / "preprocessor_config.json").write_text(json.dumps({"means": [[0.5, 0.5, 0.5]], "stds": [[0.5] * 3]}))
    with pytest.raises(CheckpointError, match=r"preprocessor_config\.json: means/stds: expected two entries"):
        validate_checkpoint(folder)
    (folder / "preprocessor_config.json").unlink()  # older checkpoints: the defaults
    assert load_checkpoint(folder).model.vision_backbone.normalization == ImageNormalization()


def test_validation_reads_headers_only_and_finds_what_loading_would(saved, tmp_path):
    assert validate_checkpoint(saved[0]) == saved[1].cfg
    folder = copy(saved, tmp_path / "shapes")
    config = json.loads((folder / "config.json").read_text())
    config["motion"]["hidden_size"] = 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: does not match config\.json: shape mismatches"):
        validate_checkpoint(folder)
    folder = copy(saved, tmp_path / "adapter")
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"has no adapter_model\.safetensors"):
        validate_checkpoint(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match=r"model_type is 'llama', not 'lamp' .* or 'openvla'"):
        validate_checkpoint(folder)
