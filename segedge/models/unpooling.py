"""2×2 max pooling that remembers where each maximum was, and the unpooling that puts values back there.

SegNet and ENet both upsample by "max-unpooling": the decoder writes each value to the position its
encoder's max pool took the maximum from, and zeros elsewhere. Three interchangeable ways to do it:

- ``indexed``: ``max_pool2d(return_indices=True)`` + ``max_unpool2d``, the paper's way. torch 2.13's
  dynamo exporter writes MaxPool's indices output and a ScatterND; onnxruntime runs it, TensorRT's ONNX
  parser does not import MaxPool's indices output (``segedge check``: ``maxpool-indices``), and the legacy
  TorchScript exporter cannot export ``max_unpool2d`` at all.
  OpenVINO 2026.4's CPU plugin runs MaxPool with an indices output as a reference kernel ("Reference",
  ``ref_f32``/``ref_bf16`` in its profile): on ENet at 512×1024, 2 threads, the two pools and the two 1×1
  MaxPools the exporter adds to turn ONNX's flat indices into per-plane ones took ~710 of ~870 ms (82 %).
- ``index_free``: keep, instead of indices, a 0/1 mask of the winning positions at the input's
  resolution; unpool is ``nearest_upsample(y) * mask``. Only Slice, Greater, Not, And, Cast, Resize
  (nearest), Mul, Add, MaxPool (no indices) and ConvTranspose: all in TensorRT's parser.
- ``depth_to_space``: the same winners, kept at the pooled resolution as one 0/1 plane per window position,
  ``(N, C, 4, H/2, W/2)``; unpool multiplies the pooled-size input by them and interleaves the four planes
  back with ``pixel_shuffle`` (ONNX DepthToSpace, CRD). No full-resolution Resize or Mul, no indices: the
  form OpenVINO's CPU plugin and onnxruntime both run with their own kernels. ENet at 512×1024, 2 threads
  (``benchmarks/bench_enet_openvino.py``): like ``index_free``, OpenVINO ~4.7× faster than ``indexed`` and
  onnxruntime no slower; in OpenVINO bf16 it gives exactly ``indexed``'s numbers (its unpooling stays f32,
  where ``index_free``'s full-resolution product is rounded to bf16), but was never faster than
  ``index_free`` there, so the models use ``index_free``. DepthToSpace is in TensorRT's parser too.

The mask must pick exactly the position max_pool2d's index points to, ties included (equal values in one
window are common after ReLU): PyTorch keeps the *first* maximum in row-major scan order (its kernel
replaces the running maximum only on a strictly greater value; onnxruntime's MaxPool does the same). So the
four positions of each window (top-left a, top-right b, bottom-left c, bottom-right d, taken by strided
slicing) are compared with each other: a position wins when it is strictly greater than every earlier one
and not smaller than any later one. Exactly one wins per window, whatever the values.

Why compare the window's elements with each other rather than with the pooled maximum (``x ==
upsample(max_pool(x))``, the obvious mask): static INT8 quantization may put Q/DQ on MaxPool's input but not
on the comparison's, so the maximum no longer equals any float input and whole windows lose their switch.
Comparisons among one tensor's own elements cannot disagree that way. (Measured on ENet with random weights,
settled BN, onnxruntime INT8 vs FP32 argmax agreement: indexed 0.62, equality mask 0.41, this mask 0.61.)

The winners are placed back at their window positions by multiplying with four one-hot position maps, made
by a stride-2 transposed convolution of a ones tensor with fixed 2×2 kernels, so every size follows the input
at run time with no shape arithmetic (``index_free``), or by DepthToSpace, whose channel order ``c*4 + k``
(k = 2·dy + dx, CRD) is exactly the window scan order (``depth_to_space``).

All modes take the same parameters (none), so a state_dict moves between the two variants of a model
and the outputs agree exactly; ``tests/models/test_segnet.py`` and ``test_enet.py`` check it (ties included).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

UnpoolMode = Literal["indexed", "index_free", "depth_to_space"]
UNPOOL_MODES: tuple[str, ...] = ("indexed", "index_free", "depth_to_space")


def _nearest_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour upsampling to ``ref``'s H×W (a size from the tensor, so it stays dynamic)."""
    return F.interpolate(x, size=ref.shape[-2:], mode="nearest")


def first_maximum_winners(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Four boolean maps at the pooled resolution, one per 2×2 window position in scan order (top-left,
    top-right, bottom-left, bottom-right): exactly one is true per window, at the position
    ``max_pool2d(return_indices=True)`` points to (the first maximum; see the module docstring)."""
    a, b, c, d = x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]
    b_over_a, c_over_a, d_over_a, c_over_b, d_over_b, d_over_c = b > a, c > a, d > a, c > b, d > b, d > c
    return (
        ~b_over_a & ~c_over_a & ~d_over_a,  # a: no later position is greater
        b_over_a & ~c_over_b & ~d_over_b,  # b: beats a, not beaten by c or d
        c_over_a & c_over_b & ~d_over_c,  # c: beats a and b, not beaten by d
        d_over_a & d_over_b & d_over_c,  # d: beats all three
    )


class SwitchPool2d(nn.Module):
    """2×2 stride-2 max pool returning ``(pooled, switches)``: the argmax indices (``indexed``), the
    one-hot mask of winning positions at the input's resolution (``index_free``), or the winners as four
    0/1 planes at the pooled resolution, ``(N, C, 4, H/2, W/2)`` (``depth_to_space``)."""

    def __init__(self, mode: UnpoolMode = "indexed") -> None:
        super().__init__()
        if mode not in UNPOOL_MODES:
            raise ValueError(f"unpool mode must be one of {UNPOOL_MODES}, got {mode!r}")
        self.mode = mode
        # one-hot 2×2 kernels, one per window position in scan order; a buffer, not a parameter
        self.register_buffer("window_positions", torch.eye(4).reshape(1, 4, 2, 2), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "indexed":
            return F.max_pool2d(x, kernel_size=2, stride=2, return_indices=True)
        pooled = F.max_pool2d(x, kernel_size=2, stride=2)
        winners = first_maximum_winners(x)
        if self.mode == "depth_to_space":
            # stacked as booleans and cast once: one Concat and one Cast in the graph
            return pooled, torch.stack(winners, dim=2).to(x.dtype)
        positions = F.conv_transpose2d(torch.ones_like(pooled[:, :1]), self.window_positions.to(x.dtype), stride=2)
        mask = sum(_nearest_to(won.to(x.dtype), x) * positions[:, k : k + 1] for k, won in enumerate(winners))
        return pooled, mask


class SwitchUnpool2d(nn.Module):
    """Inverse of :class:`SwitchPool2d`: doubles H and W, writing each value at its switch position."""

    def __init__(self, mode: UnpoolMode = "indexed") -> None:
        super().__init__()
        if mode not in UNPOOL_MODES:
            raise ValueError(f"unpool mode must be one of {UNPOOL_MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor, switches: torch.Tensor) -> torch.Tensor:
        if self.mode == "indexed":
            # no output_size: H and W are multiples of the network's stride, so 2× is exact
            return F.max_unpool2d(x, switches, kernel_size=2, stride=2)
        if self.mode == "depth_to_space":
            # (N, C, 4, h, w) -> (N, 4C, h, w), channel c*4 + k: pixel_shuffle puts plane k at (k // 2, k % 2)
            return F.pixel_shuffle((x.unsqueeze(2) * switches).flatten(1, 2), 2)
        return _nearest_to(x, switches) * switches
