"""MPI-Mamba and its parts: blocks, SS2D, LFE, the CL-DM schedule and sampler, the full model and presets."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mpimamba.models.blocks import (
    ChannelLayerNorm,
    Downsample,
    GatedDConvFeedForward,
    PriorCrossAttention,
    TransposedAttention,
    Upsample,
)

# ---------------------------------------------------------------- blocks


def test_channel_layernorm_matches_layer_norm_over_channels():
    x = torch.randn(2, 6, 5, 7)
    norm = ChannelLayerNorm(6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)


def test_bias_free_layernorm_keeps_the_mean():
    x = torch.randn(2, 6, 5, 7) + 3.0
    y = ChannelLayerNorm(6, bias=False)(x)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    torch.testing.assert_close(y, x / torch.sqrt(var + 1e-5))
    assert sum(p.numel() for p in ChannelLayerNorm(6, bias=False).parameters()) == 6


def test_feedforward_and_transposed_attention_shapes_and_sizes():
    x = torch.randn(2, 8, 6, 10)
    ffn = GatedDConvFeedForward(8, expansion=2.66)
    hidden = int(8 * 2.66)
    assert sum(p.numel() for p in ffn.parameters()) == 8 * 2 * hidden + 9 * 2 * hidden + hidden * 8
    assert ffn(x).shape == x.shape
    attn = TransposedAttention(8, heads=2)
    assert attn(x).shape == x.shape
    assert attn.temperature.shape == (2, 1, 1)


def test_prior_cross_attention_with_one_token_broadcasts_its_value():
    # one prior token: softmax over a single key is 1, so every pixel receives proj(v) of that token
    cross = PriorCrossAttention(8, prior_dim=12, heads=2)
    x, prior = torch.randn(2, 8, 4, 5), torch.randn(2, 1, 12)
    added = cross(x, prior) - x  # (B, C, H, W)
    v = cross.to_kv(cross.norm_prior(prior)).chunk(2, dim=-1)[1]
    expected = cross.proj(v)[:, 0, :, None, None].expand_as(added)
    torch.testing.assert_close(added, expected, rtol=1e-5, atol=1e-6)


def test_resampling_shapes():
    x = torch.randn(1, 8, 6, 10)
    assert Downsample(8)(x).shape == (1, 16, 3, 5)
    assert Upsample(8)(x).shape == (1, 4, 12, 20)
