"""OpenVLA HF checkpoints: a tiny folder in exactly openvla/openvla-7b's layout (timm-named towers, two
bf16 shards + index, OpenVLA's config fields, its processor's preprocessor_config.json, a Llama-style
tokenizer) loads strictly, every tensor lands where timm's computation puts it, it runs as the `openvla`
policy through the CLI as it is or converted (bf16 kept, sharded), dataset_statistics.json overrides
norm_stats, and each kind of bad folder fails with an error naming the file and the problem."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from safetensors import safe_open
from typer.testing import CliRunner

from lamp_bench.harness.cli import app
from lamp_bench.harness.policy import Observation, Task
from lamp_bench.harness.registry import POLICIES, load_builtin_entries
from lamp_bench.models.lamp.action_tokenizer import ActionStats
from lamp_bench.models.lamp.checkpoint import checkpoint_kind, load_checkpoint, validate_checkpoint
from lamp_bench.models.openvla.hf_checkpoint import (
    OpenVLAError,
    convert_openvla,
    load_openvla,
    load_openvla_weights,
    read_openvla_config,
)
from lamp_bench.models.lamp.text_tokenizer import prompt_ids
from lamp_bench.models.lamp.vision import ImageNormalization

runner = CliRunner()

IMAGE, PATCH, GRID = 56, 14, 4
DINO = {"width": 32, "depth": 3, "mlp": 128, "registers": 4}
SIGLIP = {"width": 48, "depth": 3, "mlp": 96}
HEADS = 16  # both published towers (vit_large_patch14_reg4_dinov2, vit_so400m_patch14_siglip_224)
LLM = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
       "max_position_embeddings": 256, "vocab_size": 384, "pad_token_id": 320}
PAD_TO = 64
TEXT_VOCAB = LLM["vocab_size"] - PAD_TO  # 320; the last 256 ids are the action bins
# OpenVLA's processor: ImageNet's mean/std rounded to bfloat16 for DINOv2 (what it applies), SigLIP's 0.5
DINO_MEAN, DINO_STD = [0.484375, 0.455078125, 0.40625], [0.228515625, 0.2236328125, 0.224609375]
PREPROCESSOR = {
    "image_processor_type": "PrismaticImageProcessor", "auto_map": {"AutoImageProcessor": "processing_prismatic.X"},
    "input_sizes": [[3, IMAGE, IMAGE]] * 2, "interpolations": ["bicubic", "bicubic"],
    "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]], "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
    "tvf_normalize_params": [{"inplace": False, "mean": DINO_MEAN, "std": DINO_STD},
                             {"inplace": False, "mean": [0.5] * 3, "std": [0.5] * 3}],
    "use_fused_vision_backbone": True,
}
STATS = {"action": {"q01": [-0.5] * 6 + [0.0], "q99": [0.5] * 6 + [1.0], "mask": [True] * 6 + [False],
                    "mean": [0.0] * 7, "std": [1.0] * 7}, "proprio": {"mean": [0.0] * 7}, "num_transitions": 10}


def tower_tensors(prefix: str, g: torch.Generator, width: int, depth: int, mlp: int, registers: int = 0,
                  dino: bool = True) -> dict[str, torch.Tensor]:
    """timm VisionTransformer names and shapes (OpenVLA's LayerScale `scale_factor`), all blocks +
    the final norm (+ SigLIP's attention-pool head), as the published checkpoint holds them."""
    r = lambda *shape: 0.2 * torch.randn(*shape, generator=g)
    t = {"patch_embed.proj.weight": r(width, 3, PATCH, PATCH), "patch_embed.proj.bias": r(width),
         "pos_embed": r(1, GRID * GRID, width), "norm.weight": 1 + r(width), "norm.bias": r(width)}
    if dino:
        t |= {"cls_token": r(1, 1, width), "reg_token": r(1, registers, width)}
    else:
        t |= {"attn_pool.latent": r(1, 1, width), "attn_pool.q.weight": r(width, width), "attn_pool.q.bias": r(width),
              "attn_pool.kv.weight": r(2 * width, width), "attn_pool.kv.bias": r(2 * width),
              "attn_pool.proj.weight": r(width, width), "attn_pool.proj.bias": r(width),
              "attn_pool.norm.weight": 1 + r(width), "attn_pool.norm.bias": r(width),
              "attn_pool.mlp.fc1.weight": r(mlp, width), "attn_pool.mlp.fc1.bias": r(mlp),
              "attn_pool.mlp.fc2.weight": r(width, mlp), "attn_pool.mlp.fc2.bias": r(width)}
    for i in range(depth):
        b = f"blocks.{i}."
        t |= {b + "norm1.weight": 1 + r(width), b + "norm1.bias": r(width),
              b + "attn.qkv.weight": r(3 * width, width), b + "attn.qkv.bias": r(3 * width),
              b + "attn.proj.weight": r(width, width), b + "attn.proj.bias": r(width),
              b + "norm2.weight": 1 + r(width), b + "norm2.bias": r(width),
              b + "mlp.fc1.weight": r(mlp, width), b + "mlp.fc1.bias": r(mlp),
              b + "mlp.fc2.weight": r(width, mlp), b + "mlp.fc2.bias": r(width)}
        if dino:
            t |= {b + "ls1.scale_factor": r(width), b + "ls2.scale_factor": r(width)}
    return {prefix + k: v for k, v in t.items()}


def llama_tokenizer() -> PreTrainedTokenizerFast:
    """Llama-2 style: <unk> <s> </s>, SentencePiece's "▁" word marker (its own id, like 29871), BOS added."""
    symbols = ["<unk>", "<s>", "</s>", "▁", "\n"] + [chr(c) for c in range(33, 127)]
    symbols += [f"<x{i}>" for i in range(TEXT_VOCAB - len(symbols))]
    tok = Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(symbols)}, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.add_special_tokens({"pad_token": "<PAD>"})  # OpenVLA's added token, id = TEXT_VOCAB
    return fast


def write_openvla(folder: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny OpenVLA checkpoint folder; returns its tensors (as stored, bf16)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {**tower_tensors("vision_backbone.featurizer.", g, DINO["width"], DINO["depth"], DINO["mlp"],
                               DINO["registers"]),
               **tower_tensors("vision_backbone.fused_featurizer.", g, SIGLIP["width"], SIGLIP["depth"],
                               SIGLIP["mlp"], dino=False)}
    vision, hidden = DINO["width"] + SIGLIP["width"], LLM["hidden_size"]
    for name, shape in [("fc1", (4 * vision, vision)), ("fc2", (hidden, 4 * vision)), ("fc3", (hidden, hidden))]:
        tensors[f"projector.{name}.weight"] = 0.2 * torch.randn(*shape, generator=g)
        tensors[f"projector.{name}.bias"] = 0.2 * torch.randn(shape[0], generator=g)
    torch.manual_seed(seed)
    llm = LlamaForCausalLM(LlamaConfig(**LLM))
    tensors |= {f"language_model.{k}": v.detach().clone() for k, v in llm.state_dict().items()}
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}
    folder.mkdir(parents=True)
    vision = {k for k in tensors if k.startswith("vision_backbone.")}
    shards = {"model-00001-of-00002.safetensors": {k: v for k, v in tensors.items() if k in vision},
              "model-00002-of-00002.safetensors": {k: v for k, v in tensors.items() if k not in vision}}
    for name, part in shards.items():
        save_file(part, str(folder / name), metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps({
        "metadata": {"total_size": sum(v.numel() * 2 for v in tensors.values())},
        "weight_map": {k: name for name, part in shards.items() for k in part}}))
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["OpenVLAForActionPrediction"], "model_type": "openvla",
        "auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig"},
        "arch_specifier": "no-align+fused-gelu-mlp", "hf_llm_id": "meta-llama/Llama-2-7b-hf",
        "image_resize_strategy": "resize-naive", "image_sizes": [IMAGE, IMAGE], "llm_backbone_id": "llama2-7b-pure",
        "llm_max_length": 2048, "n_action_bins": 256, "output_projector_states": False,
        "pad_to_multiple_of": PAD_TO, "pad_token_id": LLM["pad_token_id"],
        "text_config": {"model_type": "llama", "torch_dtype": "bfloat16", **LLM},
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None], "torch_dtype": "bfloat16", "use_fused_vision_backbone": True,
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        "norm_stats": {"bridge_orig": STATS, "libero_spatial_no_noops": STATS},
    }))
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    llama_tokenizer().save_pretrained(str(folder))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["tokenizer_class"] = "LlamaTokenizer"  # as openvla-7b's
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return tensors


def timm_features(t: dict[str, torch.Tensor], prefix: str, images: torch.Tensor, depth: int,
                  registers: int, dino: bool) -> torch.Tensor:
    """timm's ViT computation up to the second-to-last block (OpenVLA's features), patch tokens only:
    the reference the mapped transformers towers must reproduce."""
    w = lambda k: t[prefix + k].float()
    x = F.conv2d(images, w("patch_embed.proj.weight"), w("patch_embed.proj.bias"), stride=PATCH).flatten(2).transpose(1, 2)
    x = x + w("pos_embed")  # DINOv2 (no_embed_class) and SigLIP alike: positions for patches only
    prefix_tokens = 0
    if dino:
        x = torch.cat([w("cls_token").expand(len(x), -1, -1), w("reg_token").expand(len(x), -1, -1), x], dim=1)
        prefix_tokens = 1 + registers
    width = x.shape[-1]
    for i in range(depth - 1):
        b = f"blocks.{i}."
        h = F.layer_norm(x, (width,), w(b + "norm1.weight"), w(b + "norm1.bias"), eps=1e-6)
        q, k, v = F.linear(h, w(b + "attn.qkv.weight"), w(b + "attn.qkv.bias")).view(
            len(x), -1, 3, HEADS, width // HEADS).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(len(x), -1, width)
        a = F.linear(a, w(b + "attn.proj.weight"), w(b + "attn.proj.bias"))
        x = x + (a * w(b + "ls1.scale_factor") if dino else a)
        h = F.layer_norm(x, (width,), w(b + "norm2.weight"), w(b + "norm2.bias"), eps=1e-6)
        m = F.linear(F.gelu(F.linear(h, w(b + "mlp.fc1.weight"), w(b + "mlp.fc1.bias"))),
                     w(b + "mlp.fc2.weight"), w(b + "mlp.fc2.bias"))  # timm 0.9's exact GELU (OpenVLA's pin)
        x = x + (m * w(b + "ls2.scale_factor") if dino else m)
    return x[:, prefix_tokens:]


@pytest.fixture(scope="module")
def openvla(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("openvla") / "openvla-tiny"
    return folder, write_openvla(folder)


@pytest.fixture(scope="module")
def loaded(openvla):
    return load_openvla(openvla[0])


def test_config_is_read_from_fields_and_shapes(loaded):
    cfg = loaded.config
    assert cfg.motion is None and cfg.vision.image_size == IMAGE and cfg.vision.patch_size == PATCH
    assert (cfg.vision.dino.hidden_size, cfg.vision.dino.num_layers, cfg.vision.dino.num_heads,
            cfg.vision.dino.intermediate_size, cfg.vision.dino.num_register_tokens) == (32, 3, 16, 128, 4)
    assert (cfg.vision.siglip.hidden_size, cfg.vision.siglip.num_layers, cfg.vision.siglip.intermediate_size) == (48, 3, 96)
    assert cfg.llm.vocab_size == 384 and cfg.llm.pad_token_id == 320 and cfg.llm.rms_norm_eps == 1e-6
    assert cfg.action.vocab_end == TEXT_VOCAB and cfg.action.n_bins == 256
    assert cfg.llm.prompt_suffix_id == loaded.tokenizer.convert_tokens_to_ids("▁") == 3
    ids = prompt_ids(loaded.tokenizer, cfg.llm, "Open the drawer")
    assert ids[0] == 1 and ids[-1] == 3
    assert loaded.tokenizer.decode(ids[1:-1]) == "In: What action should the robot take to open the drawer?\nOut:"
    # OpenVLA's LIBERO evaluation reads "<suite>_no_noops" statistics for "<suite>"
    assert set(loaded.statistics) == {"bridge_orig", "libero_spatial_no_noops", "libero_spatial"}
    assert loaded.statistics["libero_spatial"].gripper == "openvla"


def test_every_tensor_lands(openvla, loaded):
    _, t = openvla
    own = loaded.model.base_state_dict()
    d, s = "vision_backbone.featurizer.", "vision_backbone.fused_featurizer."
    q, k, v = t[d + "blocks.1.attn.qkv.weight"].float().chunk(3)
    assert torch.equal(own[d + "encoder.layer.1.attention.q_proj.weight"], q)
    assert torch.equal(own[d + "encoder.layer.1.attention.k_proj.weight"], k)
    assert torch.equal(own[d + "encoder.layer.1.attention.v_proj.weight"], v)
    assert torch.equal(own[d + "encoder.layer.0.layer_scale2.lambda1"], t[d + "blocks.0.ls2.scale_factor"].float())
    assert torch.equal(own[d + "embeddings.position_embeddings"][0, 1:], t[d + "pos_embed"][0].float())
    assert not own[d + "embeddings.position_embeddings"][0, 0].any()  # CLS gets no position (no_embed_class)
    assert torch.equal(own[d + "embeddings.register_tokens"], t[d + "reg_token"].float())
    v_bias = t[s + "blocks.1.attn.qkv.bias"].float().chunk(3)[2]
    assert torch.equal(own[s + "encoder.layers.1.self_attn.v_proj.bias"], v_bias)
    assert torch.equal(own[s + "embeddings.position_embedding.weight"], t[s + "pos_embed"][0].float())
    for key in [k for k in t if k.startswith(("projector.", "language_model."))]:
        assert torch.equal(own[key], t[key].float()), key
    assert all(p.dtype == torch.float32 and not p.is_meta for p in loaded.model.parameters())


def test_dino_features_match_timms_computation(openvla, loaded):
    _, t = openvla
    images = torch.rand(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(3))
    vb = loaded.model.vision_backbone
    with torch.no_grad():
        ours = vb.featurizer.encoder(vb.featurizer.embeddings(images)).last_hidden_state[:, vb.n_prefix:]
    reference = timm_features(t, "vision_backbone.featurizer.", images, DINO["depth"], DINO["registers"], dino=True)
    assert torch.allclose(ours, reference, atol=1e-4)


def test_siglip_features_match_timms_computation(openvla, loaded):
    _, t = openvla
    images = torch.rand(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(3))
    vb = loaded.model.vision_backbone
    with torch.no_grad():
        ours = vb.fused_featurizer.encoder(vb.fused_featurizer.embeddings(images)).last_hidden_state
    reference = timm_features(t, "vision_backbone.fused_featurizer.", images, SIGLIP["depth"], 0, dino=False)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_converted_checkpoint_runs_as_the_openvla_policy(openvla, loaded, tmp_path):
    converted = convert_openvla(openvla[0], tmp_path / "converted")
    again = load_checkpoint(converted)
    assert again.config == loaded.config
    theirs = again.model.base_state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in loaded.model.base_state_dict().items())
    load_builtin_entries()
    policy = POLICIES.build("openvla", checkpoint=str(converted))
    policy.reset([Task("libero_spatial", 0, "t", "open the drawer", dataset="libero_spatial")], [0])
    image = np.random.default_rng(0).integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
    action = policy.act([Observation("open the drawer", images={"third_person": image})])
    assert action.shape == (1, 7) and action.dtype == np.float32
    assert np.all(np.abs(action) <= 1) and action[0, -1] in (-1.0, 1.0)  # binarised gripper
    # the policy decodes what the loaded model predicts, un-normalised with the suite's statistics
    with torch.no_grad():
        images = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        prompt = prompt_ids(loaded.tokenizer, loaded.config.llm, "open the drawer")
        ids, _ = loaded.model.predict_action_ids(images, [prompt])
    expected = loaded.statistics["libero_spatial"].to_canonical(loaded.model.action_tokenizer.decode(ids))
    assert np.array_equal(action, expected)


def test_weights_initialise_a_lamp_model_with_a_motion_expert(openvla, loaded):
    from lamp_bench.models.lamp.config import preset
    from lamp_bench.models.lamp.model import build_model

    tiny = preset("tiny")
    assert read_openvla_config(openvla[0]).model == loaded.config
    cfg = loaded.config.replace(motion=tiny.motion, bridge=tiny.bridge.__class__(layers=(1,), num_heads=4, head_dim=16))
    model = build_model(cfg)
    motion_before = {k: v.clone() for k, v in model.base_state_dict().items()
                     if k.startswith(("motion_expert.", "bridges."))}
    load_openvla_weights(model, openvla[0])
    own, ref = model.base_state_dict(), loaded.model.base_state_dict()
    assert all(torch.equal(own[k], v) for k, v in ref.items())
    assert all(torch.equal(own[k], v) for k, v in motion_before.items())
    with pytest.raises(OpenVLAError, match=r"the model's vision, llm, action config differs from the checkpoint's"):
        load_openvla_weights(build_model(tiny), openvla[0])


# --- bad folders ----------------------------------------------------------------------------------


@pytest.fixture
def copy(openvla, tmp_path) -> Path:
    folder = tmp_path / "openvla"
    shutil.copytree(openvla[0], folder)
    return folder


def test_truncated_shard(copy):
    shard = copy / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(OpenVLAError, match=r"model-00002-of-00002\.safetensors: not a readable safetensors file"):
        load_openvla(copy)


def test_forged_shard_header(copy):
    shard = copy / "model-00001-of-00002.safetensors"
    header = json.dumps({"vision_backbone.featurizer.cls_token": {"dtype": "BF16", "shape": [1, 1, 1 << 40],
                                                                  "data_offsets": [0, 1 << 41]}}).encode()
    shard.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 64)
    with pytest.raises(OpenVLAError, match=r"model-00001-of-00002\.safetensors: not a readable safetensors file"):
        load_openvla(copy)


def test_missing_shard(copy):
    (copy / "model-00001-of-00002.safetensors").unlink()
    with pytest.raises(OpenVLAError, match=r"index\.json lists shard files that are not in .*model-00001-of-00002"):
        load_openvla(copy)


def test_index_disagreeing_with_a_shard(copy):
    index = json.loads((copy / "model.safetensors.index.json").read_text())
    index["weight_map"]["projector.fc4.weight"] = "model-00002-of-00002.safetensors"
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(OpenVLAError, match=r"model-00002-of-00002\.safetensors does not hold what .* says: "
                                           r"missing \['projector\.fc4\.weight'\]"):
        load_openvla(copy)


def test_config_of_another_model_type(copy):
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config["text_config"]}))  # a plain Llama config
    with pytest.raises(OpenVLAError, match=r"config\.json: model_type is 'llama', not 'openvla'"):
        load_openvla(copy)


def test_unsupported_openvla_variant(copy):
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "arch_specifier": "gelu-mlp"}))
    with pytest.raises(OpenVLAError, match=r"arch_specifier 'gelu-mlp'"):
        load_openvla(copy)


def rewrite_shard(folder: Path, name: str, change) -> None:
    from safetensors.torch import load_file

    path = folder / name
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != name} | {k: name for k in tensors}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def test_mismatched_shape_names_file_and_tensor(copy):
    rewrite_shard(copy, "model-00002-of-00002.safetensors",
                  lambda t: t.update({"projector.fc3.weight": torch.zeros(64, 32, dtype=torch.bfloat16)}))
    with pytest.raises(OpenVLAError, match=r"model-00002-of-00002\.safetensors: projector\.fc3\.weight has shape "
                                           r"\(64, 32\).*implies \(64, 64\)"):
        load_openvla(copy)


def test_missing_and_unexpected_tensors_are_listed(copy):
    def change(t):
        block = "vision_backbone.featurizer.blocks.0."
        t[block + "ls1.gamma_typo"] = t.pop(block + "ls1.scale_factor")

    rewrite_shard(copy, "model-00001-of-00002.safetensors", change)
    with pytest.raises(OpenVLAError, match=r"missing tensors \(1\): vision_backbone\.featurizer\.blocks\.0\.ls1\.gamma; "
                                           r"unexpected tensors \(1\): .*ls1\.gamma_typo.*model-00001-of-00002"):
        load_openvla(copy)


def test_pickled_weights_are_refused(copy):
    for shard in copy.glob("model*.safetensors*"):
        shard.unlink()
    (copy / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(OpenVLAError, match=r"has no model\.safetensors \(nor a sharded model\.safetensors\.index\.json\); "
                                           r"only \['pytorch_model\.bin'\]: pickled weights are never loaded"):
        load_openvla(copy)


# --- the folder's own statistics and image normalisation ------------------------------------------


def test_preprocessor_config_sets_the_image_normalisation(openvla, loaded, copy):
    _, t = openvla
    backbone = loaded.model.vision_backbone
    assert backbone.normalization == ImageNormalization(tuple(DINO_MEAN), tuple(DINO_STD), (0.5,) * 3, (0.5,) * 3)
    images = torch.rand(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(4))
    mean, std = torch.tensor(DINO_MEAN).view(1, 3, 1, 1), torch.tensor(DINO_STD).view(1, 3, 1, 1)
    reference = torch.cat([
        timm_features(t, "vision_backbone.featurizer.", (images - mean) / std, DINO["depth"], DINO["registers"], True),
        timm_features(t, "vision_backbone.fused_featurizer.", (images - 0.5) / 0.5, SIGLIP["depth"], 0, False),
    ], dim=-1)
    with torch.no_grad():
        assert torch.allclose(backbone(images), reference, atol=1e-4)  # what the processor would have fed
    (copy / "preprocessor_config.json").write_text(json.dumps({"means": [[0.4] * 3, [0.6] * 3], "stds": [[0.2] * 3, [0.3] * 3]}))
    assert read_openvla_config(copy).normalization == ImageNormalization((0.4,) * 3, (0.2,) * 3, (0.6,) * 3, (0.3,) * 3)
    (copy / "preprocessor_config.json").write_text(json.dumps({"tvf_normalize_params": [{"mean": [0.5] * 3, "std": [0.5] * 3}]}))
    with pytest.raises(OpenVLAError, match=r"preprocessor_config\.json: tvf_normalize_params: expected two entries"):
        read_openvla_config(copy)
    (copy / "preprocessor_config.json").unlink()
    assert read_openvla_config(copy).normalization == ImageNormalization()  # exact ImageNet, SigLIP's 0.5


FINE_TUNED = {"action": {"q01": [-0.1] * 6 + [0.0], "q99": [0.2] * 6 + [1.0], "mask": [True] * 6 + [False]},
              "proprio": {"mean": [0.0] * 8}, "num_transitions": 5, "num_trajectories": 1}


def test_dataset_statistics_json_takes_precedence_over_norm_stats(loaded, copy):
    (copy / "dataset_statistics.json").write_text(json.dumps({"libero_object_no_noops": FINE_TUNED}))
    config = read_openvla_config(copy)
    assert config.statistics_file == copy / "dataset_statistics.json"
    assert set(config.statistics) == {"libero_object_no_noops", "libero_object"}  # config.json's keys are gone
    assert np.array_equal(config.statistics["libero_object"].q99, FINE_TUNED["action"]["q99"])
    load_builtin_entries()
    policy = POLICIES.build("openvla", checkpoint=str(copy))
    policy.reset([Task("libero_object", 0, "t", "pick up the soup", dataset="libero_object")], [0])
    image = np.random.default_rng(1).integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8)
    action = policy.act([Observation("pick up the soup", images={"third_person": image})])
    with torch.no_grad():
        images = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        ids, _ = loaded.model.predict_action_ids(images, [prompt_ids(loaded.tokenizer, loaded.config.llm, "pick up the soup")])
    expected = ActionStats.from_json(FINE_TUNED, "test").to_canonical(loaded.model.action_tokenizer.decode(ids))
    assert np.array_equal(action, expected)
    (copy / "dataset_statistics.json").write_text(json.dumps({"bridge_orig": {"action": {"q01": [0.0]}}}))
    with pytest.raises(OpenVLAError, match=r"dataset_statistics\.json\['bridge_orig'\]: needs action\.q01, action\.q99"):
        read_openvla_config(copy)


# --- through the command line: convert, profile, run ---------------------------------------------


def test_validation_accepts_the_hf_folder_as_it_is(openvla, loaded):
    assert checkpoint_kind(openvla[0]) == "openvla"
    assert validate_checkpoint(openvla[0]) == loaded.config


def test_convert_keeps_bf16_and_shards_and_gives_the_same_actions(openvla, loaded, tmp_path):
    out = tmp_path / "converted"
    result = runner.invoke(app, ["convert", str(openvla[0]), str(out), "--max-shard-size", "100KB"])
    assert result.exit_code == 0, result.output
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert not (out / "model.safetensors").exists() and not list(tmp_path.glob(".converted.*"))  # no staging left
    for name in files:
        with safe_open(str(out / name), framework="pt") as f:
            slices = [f.get_slice(k) for k in f.keys()]
            assert {s.get_dtype() for s in slices} == {"BF16"}  # the source dtype, not float32
            sizes = [2 * int(np.prod(s.get_shape())) for s in slices]
            assert sum(sizes) <= 100_000 or len(sizes) == 1
    assert index["metadata"]["total_size"] == sum(2 * v.numel() for v in loaded.model.base_state_dict().values())
    assert validate_checkpoint(out) == loaded.config and checkpoint_kind(out) == "lamp"
    converted = load_checkpoint(out)
    theirs = converted.model.base_state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in loaded.model.base_state_dict().items())
    assert converted.statistics.keys() == loaded.statistics.keys()
    assert converted.model.vision_backbone.normalization == loaded.model.vision_backbone.normalization
    load_builtin_entries()
    tasks = [Task("libero_spatial", 0, "t", "open the drawer", dataset="libero_spatial")] * 2
    images = np.random.default_rng(2).integers(0, 256, (2, IMAGE, IMAGE, 3), dtype=np.uint8)
    observations = [Observation("open the drawer", images={"third_person": im}) for im in images]
    actions = []
    for folder in (openvla[0], out):
        policy = POLICIES.build("openvla", checkpoint=str(folder))
        policy.reset(tasks, [0, 1])
        actions.append(policy.act(observations))
    assert np.array_equal(actions[0], actions[1])
    again = runner.invoke(app, ["convert", str(openvla[0]), str(out)])
    assert again.exit_code == 2 and "already exists and is not an empty folder" in again.output
    bad = runner.invoke(app, ["convert", str(openvla[0]), str(tmp_path / "other"), "--max-shard-size", "5XB"])
    assert bad.exit_code == 2 and "--max-shard-size '5XB'" in bad.output
    lamp = runner.invoke(app, ["convert", str(out), str(tmp_path / "again")])  # already lamp-bench's
    assert lamp.exit_code == 2 and "model_type is 'lamp', not 'openvla'" in lamp.output


def test_profile_cli_takes_the_hf_folder_with_many_statistics_keys(openvla, loaded, tmp_path):
    assert len(loaded.statistics) > 1  # what made `profile` exit 2 before --dataset
    args = ["profile", "--policy", "openvla", "--checkpoint", str(openvla[0]), "--repeats", "1", "--out", str(tmp_path)]
    saved = tmp_path / "profile" / "openvla-small-b1.json"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    profile = json.loads(saved.read_text())
    assert profile["dataset"] is None and profile["checkpoint_hash"] == loaded.sha256
    assert profile["parameters"] == sum(p.numel() for p in loaded.model.parameters())
    assert profile["total_ms"] > 0 and profile["components_ms"]["vision"] > 0
    result = runner.invoke(app, args + ["--dataset", "bridge_orig"])
    assert result.exit_code == 0, result.output
    assert json.loads(saved.read_text())["dataset"] == "bridge_orig"
    result = runner.invoke(app, args + ["--dataset", "bridge"])
    assert result.exit_code == 2 and "--dataset 'bridge': the policy has no statistics for it" in result.output
    result = runner.invoke(app, ["profile", "--policy", "lamp", "--checkpoint", str(openvla[0])])
    assert result.exit_code == 2 and "needs a motion expert, but this checkpoint has none" in result.output


CLI = [sys.executable, "-m", "lamp_bench.harness.cli"]


def test_run_refuses_a_bad_folder_before_the_progress_bar(copy, libero_assets, tmp_path):
    (copy / "model-00002-of-00002.safetensors").unlink()
    out = tmp_path / "runs"
    result = subprocess.run([*CLI, "run", "--suite", "libero_spatial", "--policy", "openvla", "--checkpoint", str(copy),
                             "--tasks", "0", "--episodes-per-task", "1", "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lists shard files that are not in" in errors[0]
    assert "Traceback" not in result.stderr and "0/1" not in result.stderr and "episodes," not in result.stderr
    assert not out.exists()  # nothing started


@pytest.mark.slow
@pytest.mark.ci
def test_run_cli_evaluates_the_hf_folder_on_libero(openvla, loaded, libero_assets, tmp_path):
    from lamp_bench.results.store import EpisodeStore

    out = tmp_path / "runs"
    result = subprocess.run([*CLI, "run", "--suite", "libero_spatial", "--policy", "openvla", "--checkpoint",
                             str(openvla[0]), "--tasks", "0", "--episodes-per-task", "2", "--envs-per-worker", "2",
                             "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    records = EpisodeStore(out).records()
    assert sorted(r["init_index"] for r in records) == [0, 1]
    assert all(r["status"] in ("success", "failure") and r["steps"] > 0 for r in records)  # ran, no errors
    assert {r["checkpoint_hash"] for r in records} == {loaded.sha256}


def test_sweep_files_take_the_hf_folder_and_refuse_a_bad_one_at_load(openvla, copy, tmp_path):
    from lamp_bench.harness.sweep import SweepError, load_sweep

    sweep = tmp_path / "sweep.toml"
    text = ('[sweep]\nname = "hf"\n[policies.openvla]\ncheckpoint = "{}"\n[suites.libero_spatial]\ntasks = [0]\n'
            '[tables.t]\npolicies = ["openvla"]\nsuites = ["libero_spatial"]\n')
    sweep.write_text(text.format(openvla[0]))
    (cell,) = load_sweep(sweep).cells()
    assert cell.policy_kwargs["checkpoint"] == str(openvla[0].resolve())
    (copy / "tokenizer.json").unlink()
    (copy / "tokenizer.model").unlink(missing_ok=True)
    sweep.write_text(text.format(copy))
    with pytest.raises(SweepError, match=r"\[policies\.openvla\] checkpoint: .* has no tokenizer\.json or tokenizer\.model"):
        load_sweep(sweep)
    assert len(load_sweep(sweep, check_checkpoints=False).cells()) == 1  # listing skips the check
