"""SETR (Zheng et al. 2021): a plain ViT encoder over 16×16 patches, no downsampling beyond the patch
embedding, with the paper's naive and progressive-upsampling (PUP) decoders.

The paper's encoder is ViT-Large (24 layers, 1024 channels, ~300 M parameters), far past an edge
budget; this is an edge-sized "small" variant: dim 256, depth 8, 4 heads (head width 64, as in ViT),
MLP ratio 4, final LayerNorm; no class token (segmentation uses patch tokens only). Auxiliary heads on
intermediate layers are left out.

The learned position embedding is stored on the 32×64 token grid of the default 512×1024 input and is
bilinearly resized to the input's token grid at run time (the Resize takes its output size from the
token map), so the exported graph stays correct at any H/W multiple of 16; at the default size the
resize is the identity. Attention is plain MatMul + Softmax (SegFormer's attention with reduction 1),
LayerNorm exports as one LayerNormalization node.

Decoders: naive = 1×1 conv → BN → ReLU → 1×1 classifier → bilinear ×16; PUP = four rounds of 3×3
conv-BN-ReLU and bilinear ×2 (1/16 → 1/1), then a 1×1 classifier.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segedge.models.blocks import ConvBNReLU, make_divisible, resize_to
from segedge.models.segformer import EfficientSelfAttention, map_to_tokens, tokens_to_map
from segedge.models.registry import ModelSpec, register_model

PATCH = 16
DIM, DEPTH, HEADS, MLP_RATIO = 256, 8, 4, 4
DECODER_DIM = 256
POSITION_GRID = (512 // PATCH, 1024 // PATCH)  # the default input's token grid


class TransformerBlock(nn.Module):
    """Pre-norm ViT block: x + MHSA(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = EfficientSelfAttention(dim, heads, reduction=1)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, MLP_RATIO * dim), nn.GELU(), nn.Linear(MLP_RATIO * dim, dim))

    def forward(self, tokens: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attention(self.norm1(tokens), like)
        return tokens + self.mlp(self.norm2(tokens))


class VisionTransformer(nn.Module):
    """Patch embedding (16×16/s16 conv) + resized learned position embedding + blocks + LayerNorm;
    returns the 1/16 feature map."""

    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=PATCH, stride=PATCH)
        self.position = nn.Parameter(torch.zeros(1, dim, *POSITION_GRID))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.patch_embed(x)
        tokens = map_to_tokens(fmap + resize_to(self.position, fmap))
        for block in self.blocks:
            tokens = block(tokens, fmap)
        return tokens_to_map(self.norm(tokens), fmap)


class NaiveDecoder(nn.Module):
    """SETR-Naive: 1×1 conv-BN-ReLU, 1×1 classifier, bilinear upsample to the input size."""

    def __init__(self, dim: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(dim, channels, kernel_size=1)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return resize_to(self.classifier(self.conv(features)), image)


class ProgressiveUpsamplingDecoder(nn.Module):
    """SETR-PUP: four rounds of 3×3 conv-BN-ReLU then bilinear ×2 (1/16 → 1/1), then a 1×1 classifier.

    The first three ×2 are a scale factor (Resize with constant scales: follows the input at any size);
    the last resizes to the image itself (exactly ×2 since H and W are multiples of 16), so the graph's
    output dims are the input's own symbols rather than ``16*(height//16)``.
    """

    def __init__(self, dim: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(ConvBNReLU(dim if i == 0 else channels, channels) for i in range(4))
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = features
        for conv in self.convs[:-1]:
            x = F.interpolate(conv(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.classifier(resize_to(self.convs[-1](x), image))


class SETR(nn.Module):
    """SETR with the small ViT encoder and the ``decoder`` named (``"naive"`` or ``"pup"``)."""

    def __init__(self, num_classes: int, width: float = 1.0, decoder: str = "naive") -> None:
        super().__init__()
        dim = make_divisible(DIM, width, divisor=8 * HEADS, min_channels=8 * HEADS)
        self.encoder = VisionTransformer(dim, DEPTH, HEADS)
        decoders = {"naive": NaiveDecoder, "pup": ProgressiveUpsamplingDecoder}
        self.decoder = decoders[decoder](dim, make_divisible(DECODER_DIM, width), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x), x)


def build_setr_naive(num_classes: int, width: float = 1.0) -> SETR:
    return SETR(num_classes=num_classes, width=width, decoder="naive")


def build_setr_pup(num_classes: int, width: float = 1.0) -> SETR:
    return SETR(num_classes=num_classes, width=width, decoder="pup")


for _name, _builder, _decoder in (
    ("setr-naive", build_setr_naive, "naive decoder (1×1 convs, bilinear ×16)"),
    ("setr-pup", build_setr_pup, "progressive upsampling decoder (4 × conv + bilinear ×2)"),
):
    register_model(
        ModelSpec(
            name=_name,
            builder=_builder,
            description=f"SETR (Zheng 2021), small ViT (dim 256, depth 8, 4 heads, patch 16) + {_decoder}",
            default_input_size=(512, 1024),
            num_classes=19,
            output_stride=16,
            min_input_size=(64, 64),
            min_train_batch=1,  # BatchNorm only on decoder maps, never on pooled 1×1 maps
            int8_op_set="layers",  # the transformer's elementwise Q/DQ are a net loss on ORT CPU (probed)
        )
    )
