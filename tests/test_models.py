"""The LaMP model family (tiny preset, CPU): tokenizers, bridges, flow matching, decoding, sizes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lamp_bench.models.lamp.action_tokenizer import (
    GRIPPER_CANONICAL,
    GRIPPER_OPENVLA,
    PROPRIO_DIM,
    ActionStats,
    ActionTokenizer,
)
from lamp_bench.models.lamp.config import LaMPConfig, preset
from lamp_bench.models.lamp.model import Batch, build_model, count_parameters
from lamp_bench.models.lamp.text_tokenizer import byte_level_tokenizer, instruction_ids, prompt, prompt_ids

INSTRUCTIONS = ["pick up the black bowl and place it on the plate", "open the drawer"]


@pytest.fixture(scope="module")
def tiny() -> LaMPConfig:
    return preset("tiny")


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer()


def inputs(cfg: LaMPConfig, tokenizer, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = cfg.vision.image_size
    images = torch.rand(2, 3, s, s, generator=g)
    depth = 0.5 + torch.rand(2, s, s, generator=g)
    k = torch.tensor([[s * 0.8, 0.0, (s - 1) / 2], [0.0, s * 0.8, (s - 1) / 2], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
    prompts = [prompt_ids(tokenizer, cfg.llm, i) for i in INSTRUCTIONS]
    instr = [instruction_ids(tokenizer, i) for i in INSTRUCTIONS]
    proprio = torch.rand(2, PROPRIO_DIM, generator=g) * 2 - 1
    return images, depth, k, prompts, instr, proprio


def randomize_bridges(model) -> None:
    """Trained bridges have non-zero output projections (they start at zero)."""
    g = torch.Generator().manual_seed(1)
    for bridge in model.bridges.values():
        w = bridge.attn.o_proj.weight
        w.data = 0.5 * torch.randn(w.shape, generator=g)


def test_action_tokenizer_round_trip():
    tok = ActionTokenizer(vocab_end=516)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(1000, 7))
    ids = tok.encode(actions)
    assert ids.min() >= tok.first_id == 260 and ids.max() < 516
    assert np.abs(tok.decode(ids) - actions).max() <= 2.0 / 255 + 1e-9  # within one bin
    assert np.allclose(tok.decode(tok.encode(tok.centers)), tok.centers)  # centres are fixed points
    assert tok.encode(np.array([1.0, -1.0, 5.0])).tolist() == [260, 515, 260]  # edges, clipping


def test_action_statistics_conventions():
    q01, q99 = np.array([-0.5] * 6 + [0.0]), np.array([0.5] * 6 + [1.0])
    mask = np.array([True] * 6 + [False])
    raw = np.array([0.25, -0.25, 0.0, 0.5, -0.5, 0.1, 1.0])
    canonical = ActionStats(q01, q99, mask, GRIPPER_CANONICAL)
    assert np.allclose(canonical.unnormalize(canonical.normalize(raw)), raw)
    # OpenVLA's data: gripper 1 = open -> canonical -1 (open); 0 = close -> +1
    openvla = ActionStats(q01, q99, mask, GRIPPER_OPENVLA)
    assert openvla.to_canonical(np.array([0, 0, 0, 0, 0, 0, 1.0]))[-1] == -1.0
    assert openvla.to_canonical(np.array([0, 0, 0, 0, 0, 0, 0.0]))[-1] == 1.0
    assert ActionStats.from_json(canonical.to_json(), "x").gripper == GRIPPER_CANONICAL
    assert ActionStats.from_json({"action": {"q01": [0.0], "q99": [1.0]}}, "x").gripper == GRIPPER_OPENVLA


def test_text_tokenizer(tiny, tokenizer):
    ids = prompt_ids(tokenizer, tiny.llm, "Put the bowl on the plate")
    assert ids[0] == tiny.llm.bos_token_id
    assert tokenizer.decode(ids[1:]) == prompt("Put the bowl on the plate")
    assert max(ids) < tiny.action.vocab_end - tiny.action.n_bins  # text never uses action ids
    assert tokenizer.decode(instruction_ids(tokenizer, "Open It")) == "open it"


def test_config_json_round_trip_is_strict(tiny):
    assert LaMPConfig.from_dict(tiny.to_dict()) == tiny
    bad = tiny.to_dict()
    bad["llm"]["hidden_sise"] = 3
    with pytest.raises(ValueError, match=r"config\.llm: unknown keys \['hidden_sise'\]"):
        LaMPConfig.from_dict(bad)
    bad = tiny.to_dict()
    bad["motion"]["depth"]["source"] = "lidar"
    with pytest.raises(ValueError, match="lidar"):
        LaMPConfig.from_dict(bad)


def test_lifting_inverts_projection(tiny):
    model = build_model(tiny)
    s = tiny.vision.image_size
    k = torch.tensor([[60.0, 0, 30.0], [0, 55.0, 33.0], [0, 0, 1.0]])
    points = model.lift(torch.full((1, s, s), 2.0), k[None])  # (1, Np, 3)
    assert points.shape == (1, tiny.vision.num_patches, 3)
    assert torch.allclose(points[0, :, 2], torch.tensor(2.0))
    projected = (points[0] / points[0, :, 2:]) @ k.T  # back to pixels: patch centres
    centre = (tiny.vision.patch_size - 1) / 2
    assert torch.allclose(projected[0, :2], torch.tensor([centre, centre]), atol=1e-4)
    assert torch.allclose(projected[1, :2], torch.tensor([centre + tiny.vision.patch_size, centre]), atol=1e-4)


def test_zero_initialised_bridges_leave_logits_unchanged(tiny, tokenizer):
    model = build_model(tiny).eval()
    images, depth, k, prompts, instr, proprio = inputs(tiny, tokenizer)
    with torch.no_grad():
        features = model.vision_backbone(images)
        _, h = model.motion_prior(features, model.lift(depth, k), instr, model.sample_noise(2), 1)
        embeds, mask, pos = model.multimodal_inputs(model.visual_tokens(features, proprio), prompts)
        plain = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits
        with model.motion_context(h):
            bridged = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits
        randomize_bridges(model)
        with model.motion_context(h):
            trained = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits
    assert torch.equal(plain, bridged)
    assert not torch.allclose(plain, trained)  # the hooks do act once the bridges have weights


def test_proprioception_token(tiny, tokenizer):
    """The tiny preset's extra token after the patches carries the hand's state; it is required there."""
    model = build_model(tiny).eval()
    images, depth, k, prompts, instr, proprio = inputs(tiny, tokenizer)
    with torch.no_grad():
        features = model.vision_backbone(images)
        here, there = model.visual_tokens(features, proprio), model.visual_tokens(features, -proprio)
        assert here.shape == (2, tiny.vision.num_patches + 1, tiny.llm.hidden_size)
        assert torch.equal(here[:, :-1], there[:, :-1]) and not torch.allclose(here[:, -1], there[:, -1])
        with pytest.raises(ValueError, match="proprioception token"):
            model.visual_tokens(features, None)
        without = build_model(tiny.replace(proprio=False)).eval()
        assert without.visual_tokens(features, None).shape[1] == tiny.vision.num_patches


def test_gated_and_ungated_bridges_differ(tiny, tokenizer):
    gated = build_model(tiny).eval()
    randomize_bridges(gated)
    ungated = build_model(tiny.replace(bridge=dataclasses.replace(tiny.bridge, gated=False))).eval()
    own = {k: v for k, v in gated.state_dict().items() if ".gate." not in k}
    assert not ungated.load_state_dict(own, strict=False).missing_keys  # same weights but the gate
    images, depth, k, prompts, instr, proprio = inputs(tiny, tokenizer)
    batch = Batch(images, prompts, instr, torch.zeros(2, 7), proprio, depth=depth, intrinsics=k)
    torch.manual_seed(0)
    a = gated(batch)["action_logits"]
    torch.manual_seed(0)
    b = ungated(batch)["action_logits"]
    assert torch.isfinite(a).all() and not torch.allclose(a, b)


def test_euler_steps(tiny, tokenizer):
    model = build_model(tiny).eval()
    images, depth, k, prompts, instr, proprio = inputs(tiny, tokenizer)
    me = model.motion_expert
    calls = []
    me.blocks.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        c = me.context(model.vision_backbone(images), model.lift(depth, k), model.embed_instructions(instr))
        x0 = model.sample_noise(2, torch.Generator().manual_seed(0))
        v, h_manual = me.velocity(x0, torch.zeros(2), c)
        calls.clear()
        phi1, h1 = me(c, x0, steps=1)
        assert len(calls) == 1  # LaMP's single step: one network evaluation
        assert torch.allclose(phi1, x0 + v) and torch.allclose(h1, h_manual)
        assert h1.shape == (2, tiny.vision.num_patches, tiny.motion.hidden_size)
        calls.clear()
        phi10, h10 = me(c, x0, steps=10)
        assert len(calls) == 10 and not torch.allclose(phi10, phi1) and not torch.allclose(h10, h1)


def test_flow_matching_loss_trains(tiny, tokenizer):
    """The OT-CFM objective is minimisable: a few steps on one batch lower it."""
    torch.manual_seed(0)
    model = build_model(tiny)
    images, depth, k, prompts, instr, proprio = inputs(tiny, tokenizer)
    flow = torch.zeros(2, tiny.vision.num_patches, 3)
    flow[..., 2] = 0.3
    opt = torch.optim.AdamW(model.motion_expert.parameters(), lr=3e-3)
    with torch.no_grad():
        features = model.vision_backbone(images)
        text = model.embed_instructions(instr)
        points = model.lift(depth, k)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        loss = model.motion_expert.loss(model.motion_expert.context(features, points, text), flow, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_training_forward_and_parameter_groups(tiny, tokenizer):
    model = build_model(tiny)
    model.add_lora()
    images, depth, k, prompts, instr, proprio = inputs(tiny, tokenizer)
    batch = Batch(images, prompts, instr, torch.rand(2, 7) * 2 - 1, proprio, depth=depth, intrinsics=k,
                  flow=0.01 * torch.randn(2, tiny.vision.num_patches, 3))
    out = model(batch)
    assert out["action_logits"].shape == (2, 7, tiny.llm.vocab_size)
    (out["action_loss"] + out["fm_loss"]).backward()
    groups = model.parameter_groups()
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
    assert groups["lora"] and all(not p.requires_grad for p in model.language_model.parameters()
                                  if not any(p is q for q in groups["lora"]))
    for name in ("lora", "motion", "bridge"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups[name]), name


def test_constrained_cached_decoding_matches_full_forward(tiny, tokenizer):
    model = build_model(tiny).eval()
    randomize_bridges(model)
    images, depth, k, prompts, instr, proprio = inputs(tiny, tokenizer)
    x0 = model.sample_noise(2, torch.Generator().manual_seed(0))
    ids, flow = model.predict_action_ids(images, prompts, instr, model.lift(depth, k), x0, 1, proprio)
    assert ids.shape == (2, 7) and flow.shape == (2, tiny.vision.num_patches, 3)
    assert ((ids >= model.action_tokenizer.first_id) & (ids < tiny.action.vocab_end)).all()
    # Teacher-forcing the chosen ids through one uncached forward reproduces every greedy choice,
    # and each row decodes the same alone as in the (padded) batch.
    with torch.no_grad():
        features = model.vision_backbone(images)
        _, h = model.motion_prior(features, model.lift(depth, k), instr, x0, 1)
        rows = [p + i for p, i in zip(prompts, ids[:, :-1].tolist())]
        embeds, mask, pos = model.multimodal_inputs(model.visual_tokens(features, proprio), rows)
        with model.motion_context(h):
            logits = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos,
                                          logits_to_keep=7).logits
        first = model.action_tokenizer.first_id
        assert torch.equal(first + logits[..., first:tiny.action.vocab_end].argmax(-1), ids)
        alone, _ = model.predict_action_ids(images[1:], prompts[1:], instr[1:], model.lift(depth, k)[1:], x0[1:], 1,
                                            proprio[1:])
    assert torch.equal(alone[0], ids[1])


def test_openvla_7b_preset_builds_on_meta():
    model = build_model(preset("openvla-7b"), device="meta")
    total = count_parameters(model)
    motion = sum(p.numel() for p in model.motion_expert.parameters())
    llm = sum(p.numel() for p in model.language_model.parameters())
    assert 7.4e9 < total < 7.9e9, total  # OpenVLA-7B (7.5B) + motion expert + bridges
    assert 90e6 < motion < 120e6, motion  # the paper's ~100M motion expert
    assert 6.7e9 < llm < 6.8e9, llm  # Llama-2-7B with OpenVLA's 32064-row vocabulary
