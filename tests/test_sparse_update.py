"""Channel-sparse weight update (--train-channels, codegen/channels.py): the first channels of a
layer's weight train as a parameter of their own, the rest stays frozen.

Tolerance (float32, as tests/test_train_vs_torch.py): each of 30 steps' losses within 1e-5
relative (+1e-6 absolute) of PyTorch training the same slices, final weights within 2e-5."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from codegen import federated, loader, training
from codegen.blob import decode_delta, decode_params
from codegen.errors import OptionError
from helpers import compile_model, export_torch, onnx_model
from test_cli_errors import expect_error, mlp_model

torch = pytest.importorskip("torch", reason="the reference is PyTorch autograd")

STEPS, BATCH = 30, 4
# conv 0 (frozen bias: split into constants), conv 2 and the Linear 5 (trainable biases: sliced)
CHANNELS = ["0.weight:0.5", "2.weight:0.25", "5.weight:0.5"]
SLICES = {"0.weight": 4, "2.weight": 2, "5.weight": 3}


def cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 6 * 6, 5))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return export_torch(cnn(), torch.zeros(BATCH, 3, 6, 6), tmp_path_factory.mktemp("m") / "cnn.onnx", dynamo=False)


def test_matches_torch_masked(tmp_path, model_path):
    """30 steps of SGD with momentum and weight decay: the C trains the slices as PyTorch does
    when only those channels are parameters (so neither gradient nor decay reaches the others)."""
    lr, hyper = 0.05, {"momentum": 0.9, "weight_decay": 1e-3}
    trainer = compile_model(model_path, tmp_path / "b", loss="cross_entropy", lr=lr, train_channels=CHANNELS,
                            train_bias_last=2, **hyper)
    params = trainer.get_params()
    assert {n: v.shape for n, v in params.items()} == {
        "0.weight[:4]": (4, 3, 3, 3), "2.weight[:2]": (2, 8, 3, 3), "2.bias": (8,), "5.weight[:3]": (3, 288),
        "5.bias": (5,)}
    model = cnn()
    full = {n: p.detach().clone() for n, p in model.named_parameters()}
    leaves = {n: full[n][:k].clone().requires_grad_() for n, k in SLICES.items()}
    leaves.update({n: full[n].clone().requires_grad_() for n in ("2.bias", "5.bias")})
    opt = torch.optim.SGD(leaves.values(), lr=lr, **hyper)

    def weights():
        return {n: torch.cat([leaves[n], full[n][SLICES[n]:]]) if n in SLICES else leaves.get(n, full[n])
                for n in full}

    rng = np.random.default_rng(1)
    for step in range(STEPS):
        x = rng.normal(size=(BATCH, 3, 6, 6)).astype(np.float32)
        y = rng.integers(0, 5, size=BATCH)
        out = torch.func.functional_call(model, weights(), (torch.tensor(x),))
        ref = torch.nn.functional.cross_entropy(out, torch.tensor(y))
        opt.zero_grad()
        ref.backward()
        opt.step()
        assert trainer.train_step(x, y) == pytest.approx(ref.item(), rel=1e-5, abs=1e-6), f"step {step}"
    final = trainer.get_params()
    for name, k in SLICES.items():
        np.testing.assert_allclose(final[f"{name}[:{k}]"], leaves[name].detach().numpy(), atol=2e-5)
    assert np.array_equal(decode_params(trainer.save_params(), trainer.manifest)["2.weight[:2]"],
                          final["2.weight[:2]"])

    trainer.export_onnx(tmp_path / "out.onnx")
    exported = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "out.onnx")).graph.initializer}
    for name, k in SLICES.items():
        assert exported[name].shape == tuple(full[name].shape)
        np.testing.assert_array_equal(exported[name][:k], final[f"{name}[:{k}]"])
        np.testing.assert_array_equal(exported[name][k:], full[name][k:].numpy())


def test_federated_delta_over_the_slice(tmp_path, model_path):
    """A round's delta holds the trained slices only, and FedAvg of it moves only them."""
    trainer = compile_model(model_path, tmp_path / "b", loss="cross_entropy", lr=0.05,
                            train_channels="2.weight:0.25")
    start = trainer.get_params()
    trainer.begin_round()
    rng = np.random.default_rng(2)
    trainer.train_step(rng.normal(size=(BATCH, 3, 6, 6)).astype(np.float32), rng.integers(0, 5, size=BATCH))
    delta, samples = decode_delta(trainer.delta(7), trainer.manifest)
    assert samples == 7 and list(delta) == ["2.weight[:2]"] and delta["2.weight[:2]"].shape == (2, 8, 3, 3)
    np.testing.assert_allclose(delta["2.weight[:2]"], trainer.get_params()["2.weight[:2]"] - start["2.weight[:2]"],
                               atol=1e-7)
    new = federated.fedavg(start, [(delta, samples)])
    np.testing.assert_allclose(new["2.weight[:2]"], trainer.get_params()["2.weight[:2]"], atol=1e-7)


def test_matmul_and_gemm_columns(tmp_path):
    """A 2-D MatMul weight and a Gemm with transB=0 train their first columns; with a trainable Gemm
    C sliced for both parts. One SGD step from the same weights: the slices move exactly as the
    same entries do when everything trains, the rest does not move."""
    rng = np.random.default_rng(3)
    inits = {"W1": rng.normal(size=(8, 6)), "b1": rng.normal(size=6), "W2": rng.normal(size=(6, 3)),
             "c": rng.normal(size=3)}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Gemm", ["r", "W2", "c"], ["y"])]
    path = tmp_path / "m.onnx"
    onnx_model(nodes, {"x": [4, 8]}, {"y": [4, 3]}, {k: v.astype(np.float32) for k, v in inits.items()}, path=path)
    x, y = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(4, 3)).astype(np.float32)
    full = compile_model(path, tmp_path / "full", lr=0.1)
    sparse = compile_model(path, tmp_path / "sparse", lr=0.1, train_channels=["W1:0.5", "W2:0.34"], train_bias_last=1)
    assert full.train_step(x, y) == sparse.train_step(x, y)
    want, got = full.get_params(), sparse.get_params()
    assert list(got) == ["W1[:, :3]", "W2[:, :2]", "c"]
    np.testing.assert_allclose(got["W1[:, :3]"], want["W1"][:, :3], atol=1e-6)
    np.testing.assert_allclose(got["W2[:, :2]"], want["W2"][:, :2], atol=1e-6)
    np.testing.assert_allclose(got["c"], want["c"], atol=1e-6)
    sparse.export_onnx(tmp_path / "out.onnx")
    exported = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "out.onnx")).graph.initializer}
    np.testing.assert_array_equal(exported["W1"][:, 3:], inits["W1"][:, 3:].astype(np.float32))
    np.testing.assert_array_equal(exported["W2"][:, :2], got["W2[:, :2]"])


def test_depthwise_and_grouped_convs(tmp_path):
    """An inverted-residual-like stack: depthwise Conv (group 8, any channel count: 3 of 8) and a
    grouped Conv (group 2, 4 outputs per group: 0.25 of 8 rounds up to one whole group, 4). Ten
    SGD steps from the same weights: losses and slices as PyTorch's, where only those channels
    are parameters."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
                              torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1, groups=2), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 5 * 5, 4))
    path = export_torch(net, torch.zeros(BATCH, 3, 5, 5), tmp_path / "g.onnx", dynamo=False)
    trainer = compile_model(path, tmp_path / "b", loss="cross_entropy", lr=0.1,
                            train_channels=["2.weight:0.375", "4.weight:0.25"], train_bias_last=2)
    slices = {"2.weight": 3, "4.weight": 4}
    assert {n: v.shape for n, v in trainer.get_params().items()} == {
        "2.weight[:3]": (3, 1, 3, 3), "4.weight[:4]": (4, 4, 3, 3), "4.bias": (8,), "6.bias": (4,)}
    full = {n: p.detach().clone() for n, p in net.named_parameters()}
    leaves = {n: full[n][:k].clone().requires_grad_() for n, k in slices.items()}
    leaves.update({n: full[n].clone().requires_grad_() for n in ("4.bias", "6.bias")})
    opt = torch.optim.SGD(leaves.values(), lr=0.1)
    rng = np.random.default_rng(2)
    for step in range(10):
        x = rng.normal(size=(BATCH, 3, 5, 5)).astype(np.float32)
        y = rng.integers(0, 4, size=BATCH)
        weights = {n: torch.cat([leaves[n], full[n][slices[n]:]]) if n in slices else leaves.get(n, full[n])
                   for n in full}
        ref = torch.nn.functional.cross_entropy(torch.func.functional_call(net, weights, (torch.tensor(x),)),
                                                torch.tensor(y))
        opt.zero_grad()
        ref.backward()
        opt.step()
        assert trainer.train_step(x, y) == pytest.approx(ref.item(), rel=1e-5, abs=1e-6), f"step {step}"
    for name, k in slices.items():
        np.testing.assert_allclose(trainer.get_params()[f"{name}[:{k}]"], leaves[name].detach().numpy(), atol=2e-5)


def test_quantized_model(tmp_path, model_path):
    """In an int8 model (--quantize int8) the layer with trainable channels runs in float (both
    its parts; the frozen rest is its dequantized weight), the other layers in int8; the export
    runs in onnxruntime as the host predicts."""
    ort = pytest.importorskip("onnxruntime", reason="runs the exported model")
    rng = np.random.default_rng(4)
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(16, 3, 6, 6)).astype(np.float32))
    trainer = compile_model(model_path, tmp_path / "b", loss="cross_entropy", lr=0.05, quantize="int8",
                            calibration=tmp_path / "calib.npz", train_channels="2.weight:0.25", batch=BATCH)
    assert list(trainer.get_params()) == ["2.weight[:2]"]
    x, y = rng.normal(size=(BATCH, 3, 6, 6)).astype(np.float32), rng.integers(0, 5, size=BATCH)
    losses = [trainer.train_step(x, y) for _ in range(5)]
    assert losses[-1] < losses[0]
    trainer.export_onnx(tmp_path / "out.onnx")
    session = ort.InferenceSession(str(tmp_path / "out.onnx"))
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], trainer.predict(x),
                               atol=1e-5)


def select(path, **sel):
    return training.select_trainable(loader.load(path), training.Selection(**sel))


def test_selector_algebra(model_path):
    """An adding selector (DECISIONS §1): joins the base set (empty when only adding selectors
    come), a whole weight chosen otherwise wins over its slice, --freeze is subtracted last."""
    assert select(model_path, channels="2.weight:0.25") == ["2.weight[:2]"]
    assert select(model_path, channels=["2.*:0.3"]) == ["2.weight[:3]"]  # ceil(0.3 x 8); biases never sliced
    assert select(model_path, channels="5.weight:0.01") == ["5.weight[:1]"]  # at least one channel
    assert select(model_path, channels="5.weight:1") == ["5.weight"]
    assert select(model_path, last=1, channels="2.weight:0.25") == ["2.weight[:2]", "5.weight", "5.bias"]
    assert select(model_path, last=1, channels="5.weight:0.5") == ["5.weight", "5.bias"]
    assert select(model_path, bias_last=1, channels="*.weight:0.5") == [
        "0.weight[:4]", "2.weight[:4]", "5.weight[:3]", "5.bias"]
    assert select(model_path, channels="*.weight:0.5", freeze="0.*") == ["2.weight[:4]", "5.weight[:3]"]
    with pytest.raises(OptionError, match="leave no parameter"):
        select(model_path, channels="2.weight:0.5", freeze="2.weight")


@pytest.mark.parametrize("value, needles", [
    ("nothing*:0.5", ["'nothing*' matches no Conv", "W"]),
    ("W:0", ["fraction must be in (0, 1]"]),
    ("W:1.5", ["fraction must be in (0, 1]"]),
    ("W", ["expected PATTERN:FRACTION"]),
    ("W:half", ["expected PATTERN:FRACTION"]),
    ("b:0.5", ["'b' matches no Conv"]),
])
def test_bad_input(tmp_path, value, needles):
    path = tmp_path / "m.onnx"
    mlp_model(path)
    expect_error(tmp_path, ["generate", path, "-o", tmp_path / "out", "--train-channels", value], *needles)


def test_inspect_and_budget_show_the_choice(tmp_path, model_path):
    """The memory report of the choice: the slice and its momentum instead of whole weights."""
    from codegen import api
    report = api.inspect(model_path, optimizer="sgd", momentum=0.9, train_channels="2.weight:0.25")
    mine = next(r for r in report.memory_by_choice if r.choice == "your choice")
    assert mine.options == "--train-channels 2.weight:0.25"
    assert mine.memory["param_bytes"] == 2 * 8 * 9 * 4 and mine.memory["optimizer_state_bytes"] == 2 * 8 * 9 * 4
    everything = sum(p["shape"] and int(np.prod(p["shape"])) * 4 for p in report.params)
    assert mine.memory["frozen_bytes"] == everything - mine.memory["param_bytes"]  # the rest once, in flash
    expect_error(tmp_path, ["generate", model_path, "-o", tmp_path / "out", "--train-channels", "2.weight:0.25",
                            "--ram-budget", "100"], "--ram-budget")
