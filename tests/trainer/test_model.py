import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from clipdata.trainer import model as M

# open_clip's parameter counts for the same architectures (its model table)
OPEN_CLIP_PARAMS = {
    "ViT-B-32": 151_277_313, "ViT-B-16": 149_620_737, "ViT-L-14": 427_616_513,
    "RN50": 102_007_137, "RN101": 119_688_033, "RN50x4": 178_300_601,
}
TINY = ["tiny-vit", "tiny-rn"]


def meta_model(config):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        return M.build_model(config)


def batch(config, n=4, seed=0, eot_id=None):
    g = torch.Generator().manual_seed(seed)
    size = config["vision_cfg"]["image_size"]
    text = config["text_cfg"]
    eot_id = text["vocab_size"] - 1 if eot_id is None else eot_id
    images = torch.randn(n, 3, size, size, generator=g)
    tokens = torch.zeros(n, text["context_length"], dtype=torch.long)
    for i in range(n):
        length = 3 + i
        tokens[i, :length] = torch.randint(1, eot_id - 1, (length,), generator=g)
        tokens[i, length] = eot_id
    return images, tokens


def test_registry_lists_every_architecture():
    assert set(M.list_configs()) >= {"ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50", "RN101", "RN50x4", *TINY}


def test_load_config_from_a_path_and_errors(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(M.load_config("tiny-vit")))
    assert M.load_config(str(path)) == M.load_config("tiny-vit")
    with pytest.raises(ValueError, match="unknown model config 'ViT-X'.*tiny-vit"):
        M.load_config("ViT-X")
    config = M.load_config("tiny-vit")
    config["vision_cfg"]["depth"] = 3
    with pytest.raises(ValueError, match="vision_cfg.*depth"):
        M.build_model(config)


@pytest.mark.parametrize("name", sorted(OPEN_CLIP_PARAMS))
def test_big_configs_have_the_published_parameter_counts(name):
    clip = meta_model(M.load_config(name))
    assert M.count_params(clip) == OPEN_CLIP_PARAMS[name]
    if name in ("ViT-B-32", "RN50"):  # the paper's 63M-parameter text Transformer
        assert 63e6 < M.count_params(clip.text) < 64e6


def test_vit_b_32_builds_and_runs_on_cpu():
    clip = M.build_model("ViT-B-32")
    assert M.count_params(clip) == 151_277_313
    with torch.no_grad():
        image_features, text_features, scale = clip(*batch(clip.config, n=1))
    assert image_features.shape == text_features.shape == (1, 512)


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_shapes_and_normalised_features(name):
    config = M.load_config(name)
    clip = M.build_model(config)
    images, tokens = batch(config)
    image_features, text_features, scale = clip(images, tokens)
    assert image_features.shape == text_features.shape == (4, config["embed_dim"])
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(text_features.norm(dim=-1), torch.ones(4))
    assert scale.item() == pytest.approx(1 / 0.07)
    raw = clip.encode_image(images, normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(4))


def test_logit_scale_init_and_clamp():
    clip = M.build_model("tiny-vit")
    assert clip.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        clip.logit_scale.fill_(7.0)
    clip.clamp_logit_scale()
    assert clip.logit_scale.exp().item() == pytest.approx(100)
    with torch.no_grad():
        clip.logit_scale.fill_(-1.0)
    clip.clamp_logit_scale()
    assert clip.logit_scale.item() == 0.0


def test_text_features_are_read_at_the_eot_token():
    config = M.with_tokenizer(M.load_config("tiny-vit"), type("T", (), {"vocab_size": 1000, "eot_id": 7})())
    assert config["text_cfg"]["vocab_size"] == 1000 and M.load_config("tiny-vit")["text_cfg"]["vocab_size"] == 49408
    clip = M.build_model(config).eval()
    _, tokens = batch(config, n=2, eot_id=999)
    tokens[tokens == 999] = 0
    tokens[0, :4] = torch.tensor([998, 11, 12, 7])  # sot, two words, eot
    tokens[1, :4] = torch.tensor([998, 11, 12, 7])
    tokens[1, 4:] = 55  # anything after the eot (padding) is never seen
    features = clip.encode_text(tokens)
    torch.testing.assert_close(features[0], features[1])
    tokens[1, 2] = 13  # a word before the eot is
    assert not torch.allclose(clip.encode_text(tokens)[0], clip.encode_text(tokens)[1])


@pytest.mark.parametrize("name", TINY)
def test_grad_checkpointing_gives_the_same_loss_and_gradients(name):
    config = M.load_config(name)
    config["text_cfg"]["vocab_size"] = 1000  # the 49408-row embedding would dominate the run time
    images, tokens = batch(config)

    def run(checkpointing):
        torch.manual_seed(0)
        clip = M.build_model(config).double()
        clip.set_grad_checkpointing(checkpointing)
        image_features, text_features, scale = clip(images.double(), tokens)
        logits = scale * image_features @ text_features.T
        labels = torch.arange(len(logits))
        loss = (torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
        loss.backward()
        grads = {n: p.grad.clone() for n, p in clip.named_parameters()}
        return loss.detach(), grads, {n: b.clone() for n, b in clip.named_buffers()}

    loss, grads, buffers = run(False)
    loss_ckpt, grads_ckpt, buffers_ckpt = run(True)
    torch.testing.assert_close(loss_ckpt, loss)
    assert grads_ckpt.keys() == grads.keys()
    for n in grads:
        torch.testing.assert_close(grads_ckpt[n], grads[n], msg=n)
    # recomputation in the backward pass does not update BatchNorm running statistics twice
    for n in buffers:
        torch.testing.assert_close(buffers_ckpt[n], buffers[n], msg=n)


@pytest.mark.parametrize("name", TINY)
def test_param_groups_exempt_gains_biases_and_logit_scale(name):
    clip = M.build_model(name)
    groups = M.param_groups(clip, weight_decay=0.2)
    assert [g["weight_decay"] for g in groups] == [0.2, 0.0]
    decay, no_decay = groups[0]["param_names"], groups[1]["param_names"]
    params = dict(clip.named_parameters())
    assert sorted(decay + no_decay) == sorted(params)  # every parameter once
    norms = {f"{mn}.{pn}" for mn, m in clip.named_modules() if isinstance(m, M._NORMS)
             for pn, _ in m.named_parameters(recurse=False)}
    assert norms and norms <= set(no_decay)
    assert "logit_scale" in no_decay
    assert all(n.endswith("bias") or n in norms or n == "logit_scale" for n in no_decay)
    assert not any(n.endswith("bias") or n in norms for n in decay)
    # the paper decays every other weight, embeddings included
    assert {"text.token_embedding.weight", "text.positional_embedding", "text.text_projection"} <= set(decay)
    if name == "tiny-vit":
        assert {"visual.class_embedding", "visual.positional_embedding", "visual.proj",
                "visual.transformer.resblocks.0.attn.in_proj_weight"} <= set(decay)
        assert "visual.transformer.resblocks.0.attn.in_proj_bias" in no_decay
    else:
        assert "visual.layer1.0.bn3.weight" in no_decay and "visual.attnpool.positional_embedding" in decay
    assert all(p is params[n] for g in groups for p, n in zip(g["params"], g["param_names"]))
    torch.optim.AdamW(groups, lr=1e-3)  # what the trainer does with them


@pytest.mark.parametrize("name", sorted(OPEN_CLIP_PARAMS) + TINY)
def test_flops_per_sample_matches_torchs_flop_counter(name):
    config = M.load_config(name)
    clip = meta_model(config)
    size = config["vision_cfg"]["image_size"]
    with torch.device("meta"):
        images = torch.empty(1, 3, size, size)
        tokens = torch.zeros(1, config["text_cfg"]["context_length"], dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        clip(images, tokens)
    assert M.flops_per_sample(config) == pytest.approx(3 * counter.get_total_flops(), rel=0.01)
    if name == "ViT-B-32":  # 4.4 GFLOPs (multiply-adds) for the image tower's forward, as usually quoted
        assert 40e9 < M.flops_per_sample(config) < 50e9
