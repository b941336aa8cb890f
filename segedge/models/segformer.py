"""SegFormer-B0 (Xie et al. 2021): a hierarchical Mix Transformer (MiT) encoder and an all-MLP decoder.

Layout follows the paper (Table 6, MiT-B0): four stages at 1/4, 1/8, 1/16, 1/32 with 32/64/160/256
channels, 2 blocks each, 1/2/5/8 heads; overlapping patch embeddings (7×7/s4 conv, then 3×3/s2);
efficient self-attention whose keys and values come from a map shrunk by a strided conv (reduction
8/4/2/1) and a LayerNorm; Mix-FFN (linear, 3×3 depthwise conv, GELU, linear; expansion 4) instead of
position embeddings; LayerNorm after each stage. The decoder projects every stage to 256 channels
(1×1 convs: the same map as the paper's per-token linear, exported as Conv), upsamples to 1/4,
concatenates, fuses (1×1 conv-BN-ReLU) and classifies. Stochastic depth and dropout are left out.

Export notes: ``nn.LayerNorm`` is exported as one ``LayerNormalization`` node (opset 18), which FP16
backends keep accurate; the decomposed ReduceMean/Sub/Pow form overflows in FP16. Attention is plain
MatMul + Softmax. Token ↔ map reshapes read H and W from tensors (symbolic in the export), so H/W stay
dynamic. Spatial reduction keeps stage-1 attention at 512×1024 to 32768×512 scores: feasible on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segedge.models.blocks import ConvBNReLU, make_divisible, resize_to
from segedge.models.registry import ModelSpec, register_model

DIMS, DEPTHS, HEADS, REDUCTIONS = (32, 64, 160, 256), (2, 2, 2, 2), (1, 2, 5, 8), (8, 4, 2, 1)
MLP_RATIO = 4
DECODER_DIM = 256


def tokens_to_map(tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """N×L×C tokens back to an N×C×H×W map with ``like``'s H and W (symbolic sizes, no Python ints)."""
    return tokens.transpose(1, 2).reshape(like.shape[0], -1, like.shape[2], like.shape[3])


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention; with ``reduction`` > 1 keys and values come from the map shrunk by a
    ``reduction``×``reduction`` strided conv + LayerNorm (cost L·L/R² instead of L²). ``reduction=1``
    is ViT's attention."""

    def __init__(self, dim: int, heads: int, reduction: int = 1) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.reduce: nn.Module | None = None
        if reduction > 1:
            self.reduce = nn.Conv2d(dim, dim, kernel_size=reduction, stride=reduction)
            self.reduce_norm = nn.LayerNorm(dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """N×L×C → N×heads×L×(C/heads)."""
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        context = tokens
        if self.reduce is not None:
            context = self.reduce_norm(map_to_tokens(self.reduce(tokens_to_map(tokens, like))))
        key, value = self.key_value(context).chunk(2, dim=-1)
        query, key, value = self.split_heads(self.query(tokens)), self.split_heads(key), self.split_heads(value)
        attention = torch.softmax(torch.matmul(query, key.transpose(-2, -1)) * self.scale, dim=-1)
        out = torch.matmul(attention, value).transpose(1, 2)  # N×L×heads×d
        return self.proj(out.reshape(out.shape[0], out.shape[1], -1))


class MixFFN(nn.Module):
    """Linear → 3×3 depthwise conv on the token map (positional information, replacing position
    embeddings) → GELU → linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        hidden = map_to_tokens(self.depthwise(tokens_to_map(self.fc1(tokens), like)))
        return self.fc2(self.act(hidden))


class MixTransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + Mix-FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, reduction: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = EfficientSelfAttention(dim, heads, reduction)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = MixFFN(dim, MLP_RATIO * dim)

    def forward(self, tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attention(self.norm1(tokens), like)
        return tokens + self.ffn(self.norm2(tokens), like)


class MixTransformerStage(nn.Module):
    """Overlapping patch embedding (strided conv + LayerNorm), transformer blocks, LayerNorm; map in, map out."""

    def __init__(
        self, in_channels: int, dim: int, depth: int, heads: int, reduction: int, patch: int, stride: int
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=stride, padding=patch // 2)
        self.embed_norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(MixTransformerBlock(dim, heads, reduction) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.patch_embed(x)
        tokens = self.embed_norm(map_to_tokens(fmap))
        for block in self.blocks:
            tokens = block(tokens, fmap)
        return tokens_to_map(self.norm(tokens), fmap)


def attention_dim(channels: int, width: float, heads: int) -> int:
    """Scaled channel count that keeps every head a multiple of 8 channels wide."""
    return make_divisible(channels, width, divisor=8 * heads, min_channels=8 * heads)


class SegFormer(nn.Module):
    """SegFormer (MiT-B0 encoder by default) with the all-MLP decoder; output stride 32."""

    def __init__(self, num_classes: int, width: float = 1.0) -> None:
        super().__init__()
        dims = [attention_dim(c, width, h) for c, h in zip(DIMS, HEADS)]
        in_dims = [3, *dims[:-1]]
        self.stages = nn.ModuleList(
            MixTransformerStage(i, d, n, h, r, patch=7 if s == 0 else 3, stride=4 if s == 0 else 2)
            for s, (i, d, n, h, r) in enumerate(zip(in_dims, dims, DEPTHS, HEADS, REDUCTIONS))
        )
        decoder_dim = make_divisible(DECODER_DIM, width)
        self.projections = nn.ModuleList(nn.Conv2d(d, decoder_dim, kernel_size=1) for d in dims)
        self.fuse = ConvBNReLU(4 * decoder_dim, decoder_dim, kernel_size=1)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Conv2d(decoder_dim, num_classes, kernel_size=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features, x = [], image
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        quarter = features[0]
        projected = [self.projections[0](quarter)]
        projected += [resize_to(proj(f), quarter) for proj, f in zip(self.projections[1:], features[1:])]
        fused = self.fuse(torch.cat(projected[::-1], dim=1))  # deepest first, as the reference decoder
        return resize_to(self.classifier(self.dropout(fused)), image)


def build_segformer_b0(num_classes: int, width: float = 1.0) -> SegFormer:
    return SegFormer(num_classes=num_classes, width=width)


register_model(
    ModelSpec(
        name="segformer-b0",
        builder=build_segformer_b0,
        description=(
            "SegFormer-B0 (Xie 2021): Mix Transformer encoder (efficient attention, Mix-FFN) + all-MLP "
            "decoder; LayerNorm exported as LayerNormalization"
        ),
        default_input_size=(512, 1024),
        num_classes=19,
        output_stride=32,
        min_input_size=(64, 64),
        min_train_batch=1,  # BatchNorm only in the decoder's fuse conv, on full 1/4 maps
        int8_op_set="layers",  # Q/DQ around LayerNorm/Add/Softmax cost more than the INT8 MatMuls save (probed)
        aliases=("segformer",),
    )
)
