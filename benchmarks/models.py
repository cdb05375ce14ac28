"""The benchmark suite: small PyTorch models exported to ONNX at a fixed batch. Each entry says
which loss trains it, so the three frameworks run the same step (plain SGD, no BatchNorm: the
compiler keeps BatchNorm in inference form, which PyTorch's train mode would not match)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from codegen import tied

# onnxruntime-training 1.19 reads ONNX IR version <= 10; newer onnx writes later ones by default.
ORT_IR_VERSION = 9
LR = 0.01


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, ReLU6, 3x3 depthwise, ReLU6, 1x1 project (+ skip)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 3):
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(nn.Conv2d(cin, mid, 1), nn.ReLU6(),
                                  nn.Conv2d(mid, mid, 3, stride, 1, groups=mid), nn.ReLU6(),
                                  nn.Conv2d(mid, cout, 1))
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.skip else y


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))


def lenet5() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def cnn1d() -> nn.Module:
    return nn.Sequential(nn.Conv1d(3, 16, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten(), nn.Linear(32, 6))


class Transformer(nn.Module):
    """A one-layer transformer encoder classifier over 8 steps of 16 features (mean pooling)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.enc(x).mean(1))


class GRUClassifier(nn.Module):
    """A GRU activity classifier: 6 channels x 40 steps, hidden 32, the last state -> Linear."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(6, 32, batch_first=True)
        self.head = nn.Linear(32, 6)

    def forward(self, x):
        return self.head(self.rnn(x)[1][-1])


def mobilenet() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU6(),
                         InvertedResidual(8, 8, 1), InvertedResidual(8, 16, 2), InvertedResidual(16, 16, 1),
                         InvertedResidual(16, 24, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10))


@dataclass(frozen=True)
class Suite:
    name: str
    build: Callable[[], nn.Module]
    sample: tuple[int, ...]  # one input sample's shape
    loss: str  # mse (targets like the output) or cross_entropy (class labels)
    outputs: int

    def module(self) -> nn.Module:
        torch.manual_seed(0)
        return self.build().float()

    def export(self, batch: int, path: Path) -> Path:
        """A fixed-batch ONNX file (opset 18), loadable by the compiler and by ORT 1.19."""
        module = self.module().eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(batch, *self.sample),), str(path),
                              input_names=["x"], output_names=["y"], opset_version=18, dynamo=False)
        model = onnx.load(str(path))
        model.ir_version = ORT_IR_VERSION
        tied.untie(model, tied.groups(model))  # PyTorch trains every tensor the exporter merged
        _torch_names(model, module)
        onnx.save(model, str(path))
        return path


def _torch_names(model: onnx.ModelProto, module: nn.Module) -> None:
    """The legacy exporter names the transposed copy of a Linear weight that a MatMul reads
    onnx::MatMul_<k>: it gets PyTorch's name, so both sides train the same tensors."""
    weights = {n: p.detach().numpy().T for n, p in module.named_parameters() if p.ndim == 2}
    names = {i.name for i in model.graph.initializer}
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init)
        torch_name = next((n for n, w in weights.items() if n not in names and w.shape == value.shape
                           and np.array_equal(w, value)), None)
        if init.name.startswith("onnx::") and torch_name:
            _rename(model, init.name, torch_name)
            names.add(torch_name)
    # A one-layer recurrent module's W, R, B hold PyTorch's weight_ih, weight_hh, bias_ih + bias_hh.
    recurrent = [n for n, m in module.named_modules() if isinstance(m, nn.RNNBase)]
    for name, node in zip(recurrent, (n for n in model.graph.node if n.op_type in ("GRU", "LSTM", "RNN"))):
        for slot, torch_name in enumerate(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0"), 1):
            _rename(model, node.input[slot], f"{name}.{torch_name}")


def _rename(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
    for init in model.graph.initializer:
        if init.name == old:
            init.name = new


SUITE = [Suite("mlp", mlp, (64,), "mse", 4), Suite("lenet5", lenet5, (1, 32, 32), "cross_entropy", 10),
         Suite("cnn1d", cnn1d, (3, 128), "cross_entropy", 6),
         Suite("mobilenet", mobilenet, (3, 32, 32), "cross_entropy", 10)]
# Measured by the memory benchmark only (the timing and ONNX Runtime comparisons keep SUITE).
MEMORY_SUITE = SUITE + [Suite("transformer", Transformer, (8, 16), "cross_entropy", 4),
                        Suite("gru", GRUClassifier, (40, 6), "cross_entropy", 6)]
