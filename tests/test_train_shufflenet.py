"""Models that need the indexing ops, exported by both of torch's exporters and trained side by
side with PyTorch (test_train_cnn.train_side_by_side: same initial weights, same 30 batches, SGD
with momentum and weight decay; the tolerance stated there: losses within 1e-5 relative, final
weights within 1e-5 absolute):

- ShuffleNetV2 units: channel split (torch.chunk / torch.split: the dynamo exporter writes Split
  with num_outputs or a split input, the legacy one Slice with starts computed from Shape), a
  branch of 1x1 / depthwise 3x3 / 1x1 convolutions with BatchNorm, Concat and the channel
  shuffle (Reshape, Transpose, Reshape);
- a sequence model reading its last time step, x[:, -1] (Gather on activations)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import test_train_cnn
from test_train_cnn import conv_bn, train_side_by_side, with_bn_statistics


def shuffle(x, groups: int = 2):
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's basic unit: half the channels pass, the other half go through the branch."""

    def __init__(self, channels: int, split: bool):
        super().__init__()
        half = channels // 2
        self.split = split
        self.branch = nn.Sequential(conv_bn(half, half, 1), nn.ReLU(), conv_bn(half, half, 3, groups=half),
                                    conv_bn(half, half, 1), nn.ReLU())

    def forward(self, x):
        a, b = torch.split(x, x.shape[1] // 2, dim=1) if self.split else x.chunk(2, dim=1)
        return shuffle(torch.cat([a, self.branch(b)], 1))


def shufflenet() -> nn.Module:
    """3x16x16 -> stem (stride 2) -> two units of 16 channels -> pool -> 10 classes."""
    torch.manual_seed(0)
    return with_bn_statistics(nn.Sequential(
        conv_bn(3, 16, 3, 2), nn.ReLU(), ShuffleUnit(16, False), ShuffleUnit(16, True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)))


class LastStep(nn.Module):
    """(batch, 8 steps, 6 features) -> per-step x @ w + b, tanh -> the last step -> 4 classes. (A
    Linear on 3-D input would be exported with its weight transposed under another name.)"""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.w, self.b = nn.Parameter(torch.randn(6, 12) * 0.4), nn.Parameter(torch.randn(12) * 0.1)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        return self.head(torch.tanh(x @ self.w + self.b)[:, -1])


@pytest.fixture(autouse=True)
def samples(monkeypatch):
    """The input shapes and class counts of these models, for train_side_by_side."""
    monkeypatch.setitem(test_train_cnn.SAMPLE, "shufflenet", ((3, 16, 16), 10))
    monkeypatch.setitem(test_train_cnn.SAMPLE, "last_step", ((8, 6), 4))


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo-folded-bn", "legacy-batchnorm"])
def test_shufflenet(tmp_path, dynamo):
    trainer, reference = train_side_by_side(tmp_path, shufflenet(), "shufflenet", dynamo, keep_bn=not dynamo,
                                            momentum=0.9, weight_decay=1e-3)
    assert len(trainer.get_params()) == len(list(reference.parameters()))


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_last_time_step(tmp_path, dynamo):
    train_side_by_side(tmp_path, LastStep(), "last_step", dynamo, momentum=0.9, weight_decay=1e-3)
