"""Quantized models from onnxruntime's quantize_static (QDQ, issue 14): the C forward agrees with
onnxruntime on the same file within one output quantization step, frozen layers run in int8,
selectors see the float names, a float head trains on the int8 backbone exactly as a PyTorch
reference with the same fake quantization, and bad quantization parameters are refused."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

import codegen
from codegen.errors import ModelError
from helpers import compile_model

ort = pytest.importorskip("onnxruntime", reason="onnxruntime (a dev extra) is the oracle of quantized models")
from onnxruntime import quantization as ortq  # noqa: E402

SHAPE = (3, 8, 8)


class Net(torch.nn.Module):
    """A MobileNet-style block: conv+ReLU, depthwise+ReLU6, pointwise + residual, max pooling,
    global average, linear head."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c3 = torch.nn.Conv2d(8, 8, 1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        z = self.c3(torch.nn.functional.relu6(self.c2(y))) + y
        return self.fc(torch.nn.functional.max_pool2d(z, 2).mean((2, 3)))


class Branches(torch.nn.Module):
    """Concatenated branches (a pointwise conv, an average pool), a pointwise conv, global pooling."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 1)
        self.c3 = torch.nn.Conv2d(16, 8, 1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        z = torch.cat([self.c2(y), torch.nn.functional.avg_pool2d(y, 3, 1, 1)], 1)
        return self.fc(torch.relu(self.c3(z)).mean((2, 3)))


def inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE)).astype(np.float32)


class _Reader(ortq.CalibrationDataReader):
    def __init__(self):
        self.batches = iter([{"x": x[None]} for x in inputs(16, 1)])

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="module", params=[("int8", True, Net), ("uint8", False, Net), ("int8", True, Branches)],
                ids=["s8-per-channel", "u8-per-tensor", "s8-branches"])
def qdq(request, tmp_path_factory) -> str:
    return quantized_model(tmp_path_factory.mktemp("qdq"), *request.param)


def quantized_model(folder, activations: str, per_channel: bool, net) -> str:
    """A QDQ model as quantize_static writes it: int8 or uint8 activations, per-channel or
    per-tensor int8 weights."""
    torch.manual_seed(0)
    torch.onnx.export(net().eval(), torch.zeros(1, *SHAPE), str(folder / "float.onnx"), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}}, opset_version=18, dynamo=False)
    kind = ortq.QuantType.QInt8 if activations == "int8" else ortq.QuantType.QUInt8
    ortq.quantize_static(str(folder / "float.onnx"), str(folder / "q.onnx"), _Reader(),
                         quant_format=ortq.QuantFormat.QDQ, per_channel=per_channel, activation_type=kind,
                         weight_type=ortq.QuantType.QInt8)
    return str(folder / "q.onnx")


def onnxruntime(path: str, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options).run(None, {"x": x})[0]


def output_scale(path: str) -> float:
    model = onnx.load(path)
    scale = next(n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "y")
    return float(next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == scale))


def test_forward_matches_onnxruntime(qdq, tmp_path):
    """Within one output quantization step per element; the same class wherever onnxruntime's
    top two classes are more than two steps apart."""
    trainer = compile_model(qdq, tmp_path / "b", loss="cross_entropy", train_last=1, batch=8)
    x = inputs(8 * 4, 2)
    ours = np.concatenate([trainer.predict(b) for b in np.split(x, 4)])
    ref = onnxruntime(qdq, x)
    step = output_scale(qdq)
    print(f"max |C - onnxruntime| = {np.abs(ours - ref).max() / step:.2f} output steps")
    assert np.abs(ours - ref).max() <= step * 1.001
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * step
    assert np.array_equal(ours.argmax(1)[clear], ref.argmax(1)[clear])


def test_frozen_layers_run_in_int8(qdq, tmp_path):
    """With only the head trainable, the convolutions run as int8 ops on int8 activations, and
    their weights take one byte each."""
    summary = codegen.generate(qdq, tmp_path / "b", loss="cross_entropy", train_last=1, batch=1)
    lowered = onnx.load(str(tmp_path / "b" / "training_model.onnx"))
    ops = [n.op_type for n in lowered.graph.node]
    assert ops.count("QLinearConv") == 3 and "Conv" not in ops and "QLinearGlobalAveragePool" in ops
    conv_weights = sum(np.prod(i.dims) for i in onnx.load(qdq).graph.initializer
                       if i.name.startswith("c") and i.name.endswith("weight_quantized"))
    assert summary["memory"]["frozen_bytes"] < conv_weights + 4 * 3 * 8 + 64
    assert [p["name"] for p in summary["params"]] == ["fc.bias", "fc.weight"]


def test_selectors_see_float_names(qdq, tmp_path):
    """Parameters keep their float names; scales and zero points are never parameters."""
    report = codegen.inspect(qdq)
    assert sorted(p["name"] for p in report.params) == sorted(
        f"{layer}.{kind}" for layer in ("c1", "c2", "c3", "fc") for kind in ("weight", "bias"))

    def trained(**selection):
        return [p["name"] for p in codegen.generate(qdq, tmp_path / "s", loss="cross_entropy", batch=1,
                                                    **selection)["params"]]

    assert trained(train_bias_last=2) == ["c3.bias", "fc.bias"]
    assert trained(train_last=1, train_bias_last=2) == ["c3.bias", "fc.bias", "fc.weight"]
    assert trained(train="c*.weight", freeze="c1.*") == ["c2.weight", "c3.weight"]


class _FakeQuant(torch.autograd.Function):
    """QuantizeLinear -> DequantizeLinear as the C computes it (x / scale rounded half to even,
    saturated to int8, or uint8 with its zero point), with the straight-through gradient where the
    quantized value is not at a bound."""

    @staticmethod
    def forward(ctx, x, scale, zp, lo=-128):
        level = (torch.round(x / scale) + zp).clamp(lo, lo + 255)
        ctx.save_for_backward((level > lo) & (level < lo + 255))
        return (level - zp) * scale

    @staticmethod
    def backward(ctx, dy):
        (inside,) = ctx.saved_tensors
        return dy * inside, None, None, None


class _RoundBias(torch.autograd.Function):
    """A trainable bias of an int8 layer as the C adds it: rintf(b / S) * S, S = float32(x_scale *
    w_scale); the gradient passes straight through."""

    @staticmethod
    def forward(ctx, b, scale):
        return torch.round(b / scale) * scale

    @staticmethod
    def backward(ctx, dy):
        return dy, None


def fake_quant_model(path: str, trainable: list[str]):
    """The QDQ model in PyTorch: float ops on real values, each Q/DQ pair a fake quantization,
    trainable parameters (float names) as leaves: the reference the int8 C must follow.
    -> (forward function, {name: leaf})."""
    model = onnx.load(path)
    known = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    known.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"})
    producer = {o: n for n in model.graph.node for o in n.output}
    leaves, values = {}, {}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in known:
            q, scale, zp = (known[i] for i in n.input)
            shape = [-1] + [1] * (q.ndim - 1) if scale.ndim else []
            name = n.input[0].removesuffix("_quantized")
            values[n.output[0]] = torch.tensor((q.astype(np.int64) - zp.reshape(shape)).astype(np.float32)
                                               * scale.reshape(shape))
            if name in trainable:
                leaves[name] = values[n.output[0]].clone().requires_grad_(True)
                values[n.output[0]] = leaves[name]

    def bias(name):  # an int8 layer's trainable bias at the scale the C uses
        node = next(c for c in model.graph.node if name in c.input and c.op_type in ("Conv", "Gemm"))
        x_scale = known[producer[node.input[0]].input[1]].astype(np.float64)
        w_scale = known[producer[node.input[1]].input[1]].astype(np.float64)
        return _RoundBias.apply(values[name], torch.tensor((x_scale * w_scale).astype(np.float32)))

    def forward(x):
        env = {**values, "x": torch.tensor(x)}
        for n in model.graph.node:
            a = {k.name: onnx.helper.get_attribute_value(k) for k in n.attribute}
            ins = [env.get(i) for i in n.input]
            if n.op_type == "QuantizeLinear":
                zp = known[n.input[2]]
                out = _FakeQuant.apply(ins[0], float(known[n.input[1]]), int(zp), 0 if zp.dtype == np.uint8 else -128)
            elif n.op_type == "DequantizeLinear":
                out = env[n.output[0]] if n.input[0] in known else ins[0]
            elif n.op_type in ("Conv", "Gemm"):
                b = ins[2] if n.input[2] not in leaves or n.op_type == "Gemm" and n.input[1] in leaves else bias(n.input[2])
                out = (torch.nn.functional.conv2d(ins[0], ins[1], b, a["strides"], a["pads"][:2], a["dilations"],
                                                  a["group"]) if n.op_type == "Conv" else ins[0] @ ins[1].T + b)
            elif n.op_type == "Add":
                out = ins[0] + ins[1]
            elif n.op_type == "MaxPool":
                out = torch.nn.functional.max_pool2d(ins[0], a["kernel_shape"], a["strides"])
            elif n.op_type == "AveragePool":
                out = torch.nn.functional.avg_pool2d(ins[0], a["kernel_shape"], a["strides"], a["pads"][:2],
                                                     count_include_pad=bool(a.get("count_include_pad", 0)))
            elif n.op_type == "Concat":
                out = torch.cat(ins, a["axis"])
            elif n.op_type == "ReduceMean":
                out = ins[0].mean(tuple(int(d) for d in known[n.input[1]]), keepdim=bool(a.get("keepdims", 1)))
            else:
                assert n.op_type == "Constant", n.op_type
                continue
            env[n.output[0]] = out
        return env["y"]

    return forward, leaves


def _features_model(path: str, out: str, features: str) -> str:
    """The model up to `features` (+ a zero parameter, so it compiles as a trainer): the C's own
    int8 backbone output, to feed the PyTorch reference exactly."""
    model = onnx.load(path)
    g = model.graph
    g.initializer.append(numpy_helper.from_array(np.zeros((1, 8), np.float32), "zero"))
    g.node.append(helper.make_node("Add", [features, "zero"], ["features"]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["batch", 8]))
    onnx.save(model, out)
    return out


def test_head_trains_like_fake_quant_reference(qdq, tmp_path):
    """--train-last 1 on the int8 backbone: 30 SGD steps of the float head (logits fake-quantized
    as in the model) equal PyTorch's on the same features, losses within 1e-5 relative."""
    model = onnx.load(qdq)
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    backbone = compile_model(_features_model(qdq, str(tmp_path / "f.onnx"), gemm.input[0]), tmp_path / "f",
                             loss="mse", batch=1)
    trainer = compile_model(qdq, tmp_path / "b", loss="cross_entropy", train_last=1, batch=1, lr=0.1)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == gemm.output[0])
    scale, zp = float(inits[q.input[1]]), int(inits[q.input[2]])
    zp = zp - 128 if inits[q.input[2]].dtype == np.uint8 else zp
    params = trainer.get_params()
    w, b = (torch.tensor(params[k], requires_grad=True) for k in ("fc.weight", "fc.bias"))
    opt = torch.optim.SGD([w, b], lr=0.1)
    x, labels = inputs(30, 3), np.random.default_rng(4).integers(0, 4, 30)
    for step in range(30):
        features = torch.tensor(backbone.predict(x[step:step + 1]))
        opt.zero_grad()
        logits = _FakeQuant.apply(features @ w.T + b, scale, zp)
        ref = torch.nn.functional.cross_entropy(logits, torch.tensor(labels[step:step + 1]))
        ref.backward()
        opt.step()
        loss = trainer.train_step(x[step:step + 1], labels[step:step + 1].astype(np.int32))
        assert loss == pytest.approx(ref.item(), rel=1e-5, abs=1e-6), f"step {step}"
    np.testing.assert_allclose(trainer.get_params()["fc.weight"], w.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")])
def test_bad_scale_refused(qdq, tmp_path, bad):
    model = onnx.load(qdq)
    scale = next(i for i in model.graph.initializer if i.name.endswith("_scale") and not i.dims)
    scale.CopyFrom(numpy_helper.from_array(np.float32(bad), scale.name))
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=f"scale '{scale.name}' must be positive"):
        codegen.generate(path, tmp_path / "out", loss="cross_entropy", batch=1, train_last=1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("selection", [{"train_bias_last": 3}, {"train_last": 1, "train_bias_last": 4}],
                         ids=["bias-last-3", "last-1+bias-last-4"])
def test_bias_training_on_int8_layers_follows_fake_quant_reference(qdq, tmp_path, selection):
    """Trainable biases of int8 layers (the layers stay int8, gradients pass through int8 layers
    with 1-bit masks): 30 SGD steps equal a PyTorch fake-quantized model of the same QDQ file
    (losses and parameters within 1e-5 relative)."""
    trainer = compile_model(qdq, tmp_path / "b", loss="cross_entropy", batch=1, lr=0.05, **selection)
    lowered = [n.op_type for n in onnx.load(str(tmp_path / "b" / "training_model.onnx")).graph.node]
    assert "QLinearConvGradX" in lowered and "Conv" not in lowered
    names = list(trainer.get_params())
    forward, leaves = fake_quant_model(qdq, names)
    opt = torch.optim.SGD(leaves.values(), lr=0.05)
    x, labels = inputs(30, 5), np.random.default_rng(6).integers(0, 4, 30)
    for step in range(30):
        opt.zero_grad()
        ref = torch.nn.functional.cross_entropy(forward(x[step:step + 1]), torch.tensor(labels[step:step + 1]))
        ref.backward()
        opt.step()
        loss = trainer.train_step(x[step:step + 1], labels[step:step + 1].astype(np.int32))
        assert loss == pytest.approx(ref.item(), rel=1e-5, abs=1e-6), f"step {step}"
    for name, value in trainer.get_params().items():
        np.testing.assert_allclose(value, leaves[name].detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_qoperator_form_runs_like_onnxruntime(qdq, tmp_path):
    """The QOperator form of the same model (QLinearConv, com.microsoft QLinearAdd/QGemm/...: shapes
    from their own rules) predicts like onnxruntime; training it needs the QDQ form, and says so."""
    qop = str(tmp_path / "qop.onnx")
    ortq.quantize_static(qdq.replace("q.onnx", "float.onnx"), qop, _Reader(), quant_format=ortq.QuantFormat.QOperator,
                         per_channel=True, activation_type=ortq.QuantType.QInt8, weight_type=ortq.QuantType.QInt8)
    with pytest.raises(codegen.errors.OptionError, match="quantize it in QDQ form"):
        codegen.generate(qop, tmp_path / "b", loss="cross_entropy", batch=1)
    model = onnx.load(qop)  # a float parameter after the int8 output makes it a trainer
    g = model.graph
    g.initializer.append(numpy_helper.from_array(np.zeros((1, 4), np.float32), "zero"))
    g.node.append(helper.make_node("Add", ["y", "zero"], ["z"]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, ["batch", 4]))
    onnx.save(model, str(tmp_path / "wrapped.onnx"))
    trainer = compile_model(tmp_path / "wrapped.onnx", tmp_path / "w", loss="mse", batch=4)
    x = inputs(4, 7)
    assert np.abs(trainer.predict(x) - onnxruntime(qop, x)).max() <= output_scale(qdq) * 1.001


def test_depthwise_and_pointwise_gradients_in_place(tmp_path):
    """Through a depthwise conv and a pointwise one with as many inputs as outputs (Net's c2, c3),
    dX overwrites dY: the backward holds one gradient map, not two (the DS-CNN's RAM)."""
    qdq = quantized_model(tmp_path, "int8", True, Net)
    codegen.generate(qdq, tmp_path / "b", loss="cross_entropy", batch=1, train_bias_last=4)
    aliases = json.loads((tmp_path / "b" / "memory.json").read_text())["aliases"]
    assert sum("QLinearConvGradX" in name for name in aliases) == 2


def test_inspect_and_ram_budget_offer_int8(tmp_path):
    """For a float model, inspect and --ram-budget give what int8 frozen layers would take."""
    qdq = quantized_model(tmp_path, "int8", True, Net)
    float_model = qdq.replace("q.onnx", "float.onnx")
    rows = {row.choice: row.memory for row in codegen.inspect(float_model, batch=1).memory_by_choice}
    int8, fp32 = rows["int8, --train-last 1"], rows["--train-last 1"]
    assert int8["frozen_bytes"] < fp32["frozen_bytes"] / 3 and int8["arena_bytes"] < fp32["arena_bytes"]
    with pytest.raises(codegen.errors.FitError, match=r"--quantize int8 --calibration FILE: [\d,]+ B"):
        codegen.generate(float_model, tmp_path / "b", loss="cross_entropy", batch=1, train_last=1, ram_budget=100)


def quantized_suite_model(suite: str, folder, rng):
    """Benchmark-suite model `suite` at batch 4 as folder/q.onnx, quantized by quantize_static (QDQ,
    int8 per-channel) on 4 batches from `rng` -> the suite entry."""
    from benchmarks.models import SUITE

    model = next(m for m in SUITE if m.name == suite)
    path = model.export(4, folder / "float.onnx")

    class Reader(ortq.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rng.standard_normal((4, *model.sample)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    ortq.quantize_static(str(path), str(folder / "q.onnx"), Reader(), quant_format=ortq.QuantFormat.QDQ,
                         per_channel=True, activation_type=ortq.QuantType.QInt8, weight_type=ortq.QuantType.QInt8)
    return model


SUITE_NAMES = ["mlp", "lenet5", "cnn1d", "mobilenet"]


@pytest.mark.parametrize("suite", SUITE_NAMES)
def test_suite_models_match_onnxruntime(tmp_path, suite):
    """Every benchmark-suite model quantized by quantize_static (QDQ, int8 per-channel): with its
    head trainable and the rest in int8, the C predicts within one output step of onnxruntime."""
    rng = np.random.default_rng(8)
    model = quantized_suite_model(suite, tmp_path, rng)
    trainer = compile_model(tmp_path / "q.onnx", tmp_path / "b", loss=model.loss, train_last=1)
    x = rng.standard_normal((4, *model.sample)).astype(np.float32)
    assert np.abs(trainer.predict(x) - onnxruntime(str(tmp_path / "q.onnx"), x)).max() <= \
        output_scale(str(tmp_path / "q.onnx")) * 1.001


def test_shared_bias_stays_float(tmp_path):
    """Two folded BatchNorms with equal biases share one initializer through an Identity, which
    quantize_static quantizes once: the second conv's bias is computed at run time, so that layer
    runs in float (fake-quantized) and the model still predicts like onnxruntime."""
    torch.manual_seed(0)
    layers = [m for _ in range(2) for m in (torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8),
                                            torch.nn.ReLU())]
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), *layers, torch.nn.Flatten(), torch.nn.Linear(8 * 64, 4))
    torch.onnx.export(net.eval(), torch.zeros(1, *SHAPE), str(tmp_path / "float.onnx"), input_names=["x"],
                      output_names=["y"], opset_version=18, dynamo=False)
    ortq.quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "q.onnx"), _Reader(),
                         quant_format=ortq.QuantFormat.QDQ, per_channel=True)
    trainer = compile_model(tmp_path / "q.onnx", tmp_path / "b", loss="cross_entropy", batch=1, train_last=1)
    x = inputs(1, 9)
    step = output_scale(str(tmp_path / "q.onnx"))
    assert np.abs(trainer.predict(x) - onnxruntime(str(tmp_path / "q.onnx"), x)).max() <= step * 1.001

