"""CLIP (Radford et al. 2021, §2.4-2.5): an image encoder and a text Transformer, linear projections
into one embedding space, L2-normalised features and a learned temperature.

Image encoders: a Vision Transformer (patch conv, class token, positional embedding, the paper's
extra layer norm `ln_pre` before the transformer, `ln_post`, projection) when `vision_cfg.layers` is
an int, and the paper's modified ResNet (3-conv stem, anti-aliased strided convs, attention pooling)
when it is a list of four stage depths. The text encoder is a causal Transformer whose features are
taken at the end-of-text token. Architectures are JSON files in `model_configs/` (open_clip's layout);
parameter names follow open_clip's `visual.*` / `text.*` layout.

    from clipdata.trainer import model
    config = model.load_config("tiny-vit")              # or a path to a JSON file
    config = model.with_tokenizer(config, tokenizer)    # vocab size and eot id of a learned BPE
    clip = model.build_model(config)
    image_features, text_features, scale = clip(images, tokens)   # rows have norm 1
    logits = scale * image_features @ text_features.T
    ...; optimizer.step(); clip.clamp_logit_scale()      # after every step: exp(t) <= 100

Choices that differ from OpenAI's CLIP code: activations are nn.GELU (open_clip's default for new
training, not QuickGELU), attention is F.scaled_dot_product_attention, and the end-of-text position
is found by comparing tokens with the eot id (`text_cfg.eot_id`, default vocab_size - 1, which is
where both CLIP's and our tokenizer put it) rather than by argmax over token ids.
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from clipdata.trainer.model_configs import list_configs, load_config  # noqa: F401 (re-exported)

# CLIP's image normalisation (the mean and std of its training images), applied after scaling to [0, 1].
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)

LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100)


@dataclass
class VisionConfig:
    image_size: int = 224
    layers: int | list[int] = 12  # an int: ViT depth; four ints: modified ResNet stage depths
    width: int = 768  # ViT width, or the ResNet's base channel count (RN50: 64)
    patch_size: int | None = 32  # ViT only
    head_width: int = 64  # heads = width // head_width (ResNet attention pool: width * 32 // head_width)
    mlp_ratio: float = 4.0


@dataclass
class TextConfig:
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    eot_id: int | None = None  # None: vocab_size - 1


def _parse(cls, cfg: dict, where: str):
    try:
        return cls(**cfg)
    except TypeError as e:  # an unknown key: say which section, rather than a bare TypeError
        raise ValueError(f"model config {where}: {e}") from None


def _checkpointed(block: nn.Module, *args):
    """Run `block` without keeping its activations; they are recomputed in the backward pass.

    The recomputation must not move BatchNorm running statistics a second time, so it runs with
    momentum 0 (batch statistics are still used for the output, which is therefore identical)."""
    return checkpoint(block, *args, use_reentrant=False,
                      context_fn=lambda: (nullcontext(), _batchnorm_stats_frozen(block)))


@contextmanager
def _batchnorm_stats_frozen(module: nn.Module):
    saved = [(m, m.momentum, m.num_batches_tracked.clone()) for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    for m, _, _ in saved:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


# --- Transformer ------------------------------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head self-attention; parameters named and initialised as nn.MultiheadAttention's."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        n, t, w = x.shape  # batch, sequence, width
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(w, dim=-1)
        q, k, v = (y.view(n, t, self.heads, w // self.heads).transpose(1, 2) for y in (q, k, v))
        x = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(x.transpose(1, 2).reshape(n, t, w))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(
            c_fc=nn.Linear(width, hidden), gelu=nn.GELU(), c_proj=nn.Linear(hidden, width)))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, causal: bool = False):
        super().__init__()
        self.width, self.layers, self.causal = width, layers, causal
        self.grad_checkpointing = False
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = _checkpointed(block, x, self.causal)
            else:
                x = block(x, self.causal)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig, output_dim: int):
        super().__init__()
        if not cfg.patch_size or cfg.image_size % cfg.patch_size:
            raise ValueError(f"ViT image_size {cfg.image_size} must be a multiple of patch_size {cfg.patch_size}")
        width, self.grid = cfg.width, cfg.image_size // cfg.patch_size
        self.image_size = cfg.image_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, cfg.layers, width // cfg.head_width, cfg.mlp_ratio)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    @property
    def grad_checkpointing(self) -> bool:
        return self.transformer.grad_checkpointing

    @grad_checkpointing.setter
    def grad_checkpointing(self, enable: bool) -> None:
        self.transformer.grad_checkpointing = enable

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv1(images).flatten(2).transpose(1, 2)  # N, grid * grid patches, width
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


# --- Modified ResNet (CLIP §2.4) --------------------------------------------------------------------

class Bottleneck(nn.Module):
    """ResNet-D style bottleneck: all convolutions have stride 1; when stride > 1 an average pool
    after the 3x3 conv (and before the 1x1 downsample conv) does the striding (anti-aliasing)."""
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.act3(out + identity)


class AttentionPool2d(nn.Module):
    """Replaces global average pooling: one query (the mean of the feature map, plus a positional
    embedding) attends over the positioned feature map, QKV attention as in a transformer block."""

    def __init__(self, spatial_dim: int, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.randn(spatial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)  # N, H * W, C
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        n, t, c = x.shape
        heads = lambda y, length: y.view(n, length, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        q = heads(self.q_proj(x[:, :1]), 1)
        k, v = heads(self.k_proj(x), t), heads(self.v_proj(x), t)
        out = F.scaled_dot_product_attention(q, k, v)  # N, heads, 1, C / heads
        return self.c_proj(out.transpose(1, 2).reshape(n, c))


class ModifiedResNet(nn.Module):
    def __init__(self, cfg: VisionConfig, output_dim: int):
        super().__init__()
        if len(cfg.layers) != 4 or cfg.image_size % 32:
            raise ValueError(f"ModifiedResNet needs four stage depths and image_size % 32 == 0, got {cfg}")
        width = cfg.width
        self.image_size = cfg.image_size
        self.grad_checkpointing = False
        # the 3-conv stem, then an average pool instead of a max pool
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.act3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)

        self._inplanes = width
        self.layer1 = self._make_layer(width, cfg.layers[0])
        self.layer2 = self._make_layer(width * 2, cfg.layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, cfg.layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, cfg.layers[3], stride=2)

        embed_dim = width * 32  # the ResNet feature dimension
        self.attnpool = AttentionPool2d(cfg.image_size // 32, embed_dim, embed_dim // cfg.head_width, output_dim)
        self.init_parameters()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def init_parameters(self) -> None:
        std = self.attnpool.c_proj.in_features ** -0.5
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(proj.weight, std=std)
        # each residual branch starts as the identity (zero gain on its last BatchNorm)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                nn.init.zeros_(block.bn3.weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(images)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.act3(self.bn3(self.conv3(x))))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = _checkpointed(block, x) if self.grad_checkpointing and torch.is_grad_enabled() else block(x)
        return self.attnpool(x)


# --- Text Transformer -------------------------------------------------------------------------------

class TextTransformer(nn.Module):
    def __init__(self, cfg: TextConfig, output_dim: int):
        super().__init__()
        self.context_length, self.vocab_size = cfg.context_length, cfg.vocab_size
        self.eot_id = cfg.vocab_size - 1 if cfg.eot_id is None else cfg.eot_id
        if not 0 <= self.eot_id < cfg.vocab_size:
            raise ValueError(f"text eot_id {self.eot_id} is outside the vocabulary (size {cfg.vocab_size})")
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, causal=True)
        self.ln_final = nn.LayerNorm(cfg.width)
        self.text_projection = nn.Parameter(torch.empty(cfg.width, output_dim))
        self.init_parameters()

    def init_parameters(self) -> None:
        """CLIP's init: small embeddings, and residual-branch outputs scaled down with depth."""
        width, layers = self.transformer.width, self.transformer.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width ** -0.5 * (2 * layers) ** -0.5
        attn_std = width ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] > self.context_length:
            raise ValueError(f"{tokens.shape[1]} tokens per text, the model's context is {self.context_length}")
        x = self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]
        x = self.ln_final(self.transformer(x))
        # causal attention: the eot position has seen the whole text (and nothing of the padding)
        eot = (tokens == self.eot_id).int().argmax(dim=-1)
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection


# --- CLIP -------------------------------------------------------------------------------------------

class CLIP(nn.Module):
    def __init__(self, embed_dim: int, vision_cfg: dict, text_cfg: dict):
        super().__init__()
        self.config = {"embed_dim": embed_dim, "vision_cfg": dict(vision_cfg), "text_cfg": dict(text_cfg)}
        vision = _parse(VisionConfig, vision_cfg, "vision_cfg")
        text = _parse(TextConfig, text_cfg, "text_cfg")
        if isinstance(vision.layers, (list, tuple)):
            self.visual = ModifiedResNet(vision, embed_dim)
        else:
            self.visual = VisionTransformer(vision, embed_dim)
        self.text = TextTransformer(text, embed_dim)
        # the temperature t of logits = cos-sim * exp(t), learned
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """images: float N, 3, H, W, normalised with IMAGE_MEAN / IMAGE_STD -> N, embed_dim."""
        features = self.visual(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """tokens: long N, L (L <= context_length), each row holding the eot id -> N, embed_dim."""
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Keep t in [0, ln 100] (exp(t) <= 100, CLIP §2.5); call after each optimizer step."""
        self.logit_scale.clamp_(0, LOGIT_SCALE_MAX)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.grad_checkpointing = enable
        self.text.transformer.grad_checkpointing = enable


def build_model(config: dict | str) -> CLIP:
    """A config dict (see model_configs/), or a registry name / JSON path -> a freshly initialised CLIP."""
    if isinstance(config, str):
        config = load_config(config)
    return CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"])


def model_from_checkpoint(state: dict) -> CLIP:
    """The trained CLIP a checkpoint (checkpoint.load_checkpoint) holds."""
    model = build_model(state["model_config"])
    model.load_state_dict(state["model"])
    return model


def with_tokenizer(config: dict, tokenizer) -> dict:
    """A copy of `config` whose text tower fits `tokenizer` (a learned vocabulary has its own size
    and eot id). The context length stays the config's: tokenize with
    `tokenizer(texts, context_length=config["text_cfg"]["context_length"])`."""
    config = copy.deepcopy(config)
    config["text_cfg"]["vocab_size"] = tokenizer.vocab_size
    config["text_cfg"]["eot_id"] = tokenizer.eot_id
    return config


# --- Optimizer groups, size and cost ----------------------------------------------------------------

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def decay_split(model: nn.Module) -> tuple[list[str], list[str]]:
    """Parameter names -> (decayed, not decayed).

    CLIP §2.5: decoupled weight decay "to all weights that are not gains or biases". Not decayed:
    gains (LayerNorm / BatchNorm weights), every bias (including attention's in_proj_bias) and the
    temperature logit_scale, which is not a weight either and whose range the clamp already bounds.
    Decayed: every other weight, embeddings included (token, positional and class embeddings) — the
    paper's rule; open_clip differs by also exempting 1-d parameters such as the class embedding."""
    decay, no_decay = [], []
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full_name = f"{module_name}.{name}" if module_name else name
            exempt = isinstance(module, _NORMS) or name.endswith("bias") or name == "logit_scale"
            (no_decay if exempt else decay).append(full_name)
    return decay, no_decay


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: the decayed weights, and gains / biases / logit_scale with weight_decay 0.
    Each group carries `param_names` (torch.optim keeps it, and it ends up in the checkpoint)."""
    params = dict(model.named_parameters())
    decay, no_decay = decay_split(model)
    return [
        {"params": [params[n] for n in decay], "param_names": decay, "weight_decay": weight_decay},
        {"params": [params[n] for n in no_decay], "param_names": no_decay, "weight_decay": 0.0},
    ]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _transformer_flops(width: int, layers: int, tokens: int, mlp_ratio: float) -> float:
    """Forward FLOPs of a transformer stack: 2 per multiply-add of the (4 + 2 * mlp_ratio) * width^2
    weights per token and layer, plus attention scores and the weighted sum, 2 * tokens^2 * width
    multiply-adds per layer."""
    weights = (4 + 2 * mlp_ratio) * width * width
    return layers * (2 * weights * tokens + 4 * tokens * tokens * width)


def _resnet_flops(cfg: VisionConfig, output_dim: int) -> float:
    """Forward FLOPs of the modified ResNet: 2 per multiply-add of every convolution at its output
    resolution, plus the attention pool; BatchNorm, ReLU and pooling are left out."""
    conv = lambda cin, cout, k, size: 2 * cin * cout * k * k * size * size  # noqa: E731
    width, size = cfg.width, cfg.image_size // 2
    flops = conv(3, width // 2, 3, size) + conv(width // 2, width // 2, 3, size) + conv(width // 2, width, 3, size)
    size //= 2
    inplanes = width
    for stage, depth in enumerate(cfg.layers):
        planes = width * 2 ** stage
        for i in range(depth):
            stride = 2 if stage > 0 and i == 0 else 1
            flops += conv(inplanes, planes, 1, size) + conv(planes, planes, 3, size)
            size //= stride
            flops += conv(planes, planes * 4, 1, size)
            if stride > 1 or inplanes != planes * 4:
                flops += conv(inplanes, planes * 4, 1, size)
            inplanes = planes * 4
    tokens, dim = size * size + 1, width * 32
    # k, v over every position; q for the pooled query only; scores and sum; the output projection
    return flops + 2 * (2 * tokens * dim * dim + dim * dim + 2 * tokens * dim + dim * output_dim)


def flops_per_sample(config: dict) -> float:
    """Approximate training FLOPs (forward + backward) per image-text pair, for model FLOP utilisation.

    Forward FLOPs are counted as 2 per multiply-add of the matrix products and convolutions; the
    backward pass costs twice the forward, so training = 3 * forward. For a transformer tower this
    is the usual 6 * N * T + 12 * layers * T^2 * width (N: weights per token, T: sequence length;
    the text tower always runs the full context, padding included; the ViT runs grid^2 + 1 tokens).
    Embedding lookups, norms, activations and the batch's N x N similarity (2 * global_batch *
    embed_dim per sample, small) are left out."""
    vision = _parse(VisionConfig, config["vision_cfg"], "vision_cfg")
    text = _parse(TextConfig, config["text_cfg"], "text_cfg")
    embed_dim = config["embed_dim"]
    if isinstance(vision.layers, (list, tuple)):
        image = _resnet_flops(vision, embed_dim)
    else:
        patches = (vision.image_size // vision.patch_size) ** 2
        image = (2 * 3 * vision.patch_size ** 2 * vision.width * patches
                 + _transformer_flops(vision.width, vision.layers, patches + 1, vision.mlp_ratio)
                 + 2 * vision.width * embed_dim)
    text_flops = (_transformer_flops(text.width, text.layers, text.context_length, text.mlp_ratio)
                  + 2 * text.width * embed_dim)
    return 3.0 * (image + text_flops)
