"""RNN, GRU and LSTM: forward and backpropagation through time in the generated C against PyTorch
autograd (test_ops.run_case) of the ONNX spec's equations, for each direction, layout and optional
input; outputs Y, Y_h (, Y_c) all feed the loss. Plus what they refuse."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import onnx
from onnx import helper
from typer.testing import CliRunner

import codegen
from codegen import loader, training
from codegen.cli import app
from codegen.errors import UnsupportedError
from helpers import classify_alongside, compile_model, export_torch, onnx_model
from test_ops import rand, run_case

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def cell_step(op, ax, ah, h, c, reset_first=None):
    """One step of the ONNX cell from its pre-activations (x side with Wb, h side with Rb).
    reset_first: (R_n, Rb_n) of a GRU with linear_before_reset = 0."""
    if op == "RNN":
        return torch.tanh(ax + ah), None
    if op == "GRU":
        (xz, xr, xn), (hz, hr, hn) = ax.chunk(3, -1), ah.chunk(3, -1)
        z, r = torch.sigmoid(xz + hz), torch.sigmoid(xr + hr)
        n = torch.tanh(xn + ((r * h) @ reset_first[0].T + reset_first[1] if reset_first else r * hn))
        return (1 - z) * n + z * h, None
    i, o, f, g = (ax + ah).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def reference(op, layout, direction, x, w, r, b=None, h0=None, c0=None, linear_before_reset=1):
    """Y, Y_h, Y_c of the ONNX op (layout 0 or 1) in torch."""
    if layout:
        x = x.transpose(0, 1)
    s, batch, _ = x.shape
    d, _, hidden = r.shape
    h0 = (h0.transpose(0, 1) if layout else h0) if h0 is not None else torch.zeros(d, batch, hidden)
    c0 = (c0.transpose(0, 1) if layout else c0) if c0 is not None else torch.zeros(d, batch, hidden)
    ys, hs, cs = [], [], []
    for k in range(d):
        bias = b[k] if b is not None else torch.zeros(2 * r.shape[1])
        wb, rb = bias.chunk(2)
        h, c, out = h0[k], c0[k], [None] * s
        steps = range(s - 1, -1, -1) if k == 1 or direction == "reverse" else range(s)
        for t in steps:
            h, c = cell_step(op, x[t] @ w[k].T + wb, h @ r[k].T + rb, h, c,
                             None if linear_before_reset else (r[k][2 * hidden:], rb[2 * hidden:]))
            out[t] = h
        ys.append(torch.stack(out))
        hs.append(h)
        cs.append(c)
    y, yh = torch.stack(ys, 1), torch.stack(hs)
    yc = torch.stack(cs) if op == "LSTM" else None
    if layout:
        y, yh = y.permute(2, 0, 1, 3), yh.transpose(0, 1)
        yc = yc.transpose(0, 1) if yc is not None else None
    return y, yh, yc


def run_recurrent(tmp_path, op, layout=0, direction="forward", seq=4, batch=2, inp=3, hidden=5, bias=True,
                  h0="param", kernels="simd", linear_before_reset=1):
    """h0: None (omitted), "param" (a parameter through Identity, so it gets a gradient), "input"
    (an initializer: a constant initial state)."""
    d = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    xs = (batch, seq, inp) if layout else (seq, batch, inp)
    ss = (batch, d, hidden) if layout else (d, batch, hidden)
    operands = [rand(*xs), rand(d, g * hidden, inp), rand(d, g * hidden, hidden)]
    operands += [rand(d, 2 * g * hidden)] if bias else []
    states = 2 if op == "LSTM" else 1
    operands += [rand(*ss) for _ in range(states)] if h0 else []
    attrs = {"hidden_size": hidden, "direction": direction, "layout": layout,
             **({"linear_before_reset": linear_before_reset} if op == "GRU" else {})}
    outs = ["Y", "Yh", "Yc"][:1 + states]

    def build(inputs):
        x, w, r, *rest = inputs
        bname = rest.pop(0) if bias else ""
        nodes, st = [], []
        for k, name in enumerate(rest):
            if h0 == "param":
                nodes.append(helper.make_node("Identity", [name], [f"s{k}"]))
                name = f"s{k}"
            st.append(name)
        nodes.append(helper.make_node(op, [x, w, r, bname, "", *st], outs, **attrs))
        total = "Y"
        for k, o in enumerate(outs[1:]):  # y = Y + Y_h (+ Y_c), the states broadcast over time
            if layout:
                nodes.append(helper.make_node("Unsqueeze", [o, "axis1"], [f"u{k}"]))
                o = f"u{k}"
            nodes.append(helper.make_node("Add", [total, o], [f"t{k}" if k < len(outs) - 2 else "y"]))
            total = f"t{k}"
        return nodes

    def torch_fn(x, w, r, *rest):
        bt = rest[0] if bias else None
        st = list(rest[1:] if bias else rest)
        y, yh, yc = reference(op, layout, direction, x, w, r, bt, *st, linear_before_reset=linear_before_reset)
        for s_ in (yh, yc)[:states]:
            y = y + (s_.unsqueeze(1) if layout else s_)
        return y

    consts = {"axis1": np.array([1], np.int64)} if layout else {}
    run_case(tmp_path, op, operands, torch_fn, consts=consts, kernels=kernels,
             build=lambda inputs: build([i for i in inputs if i != "axis1"]))


# Each op in each layout and direction once (the kernel's index arithmetic), the optional inputs
# omitted, the scalar kernels the boards run.
@pytest.mark.parametrize("op, layout, direction, options", [
    ("GRU", 0, "forward", {}),
    ("GRU", 1, "bidirectional", {}),
    ("GRU", 0, "reverse", {"bias": False, "h0": None, "kernels": "scalar"}),
    ("GRU", 1, "bidirectional", {"linear_before_reset": 0}),
    ("GRU", 0, "forward", {"linear_before_reset": 0, "h0": None, "kernels": "scalar"}),
    ("LSTM", 0, "bidirectional", {}),
    ("LSTM", 1, "reverse", {"h0": None}),
    ("RNN", 1, "bidirectional", {"bias": False, "h0": None}),
], ids=str)
def test_recurrent(tmp_path, op, layout, direction, options):
    run_recurrent(tmp_path, op, layout, direction, **options)


@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_initial_states_as_model_inputs(tmp_path, op):
    """initial_h (, initial_c) given at run time as model inputs, sequence_lens a constant equal to
    the sequence length: Y_h against torch; one SGD step (lr 1) gives W's gradient."""
    g, states = GATES[op], 2 if op == "LSTM" else 1
    w, r, b = rand(1, g * 4, 3), rand(1, g * 4, 4), rand(1, 2 * g * 4)
    names = ["h0", "c0"][:states]
    node = helper.make_node(op, ["x", "w", "r", "b", "lens", *names], ["", "y"], hidden_size=4,
                            **({"linear_before_reset": 1} if op == "GRU" else {}))
    path = tmp_path / "m.onnx"
    onnx_model([node], {"x": [5, 2, 3], **{n: [1, 2, 4] for n in names}}, {"y": [1, 2, 4]},
               {"w": w, "r": r, "b": b, "lens": np.array([5, 5], np.int32)}, path=path)
    trainer = compile_model(path, tmp_path / "build", loss="mse", lr=1.0)
    x, *st = rand(5, 2, 3), *(rand(1, 2, 4) for _ in names)
    target = rand(1, 2, 4)
    tw = torch.tensor(w, requires_grad=True)
    yh = reference(op, 0, "forward", torch.tensor(x), tw, torch.tensor(r), torch.tensor(b), *map(torch.tensor, st))[1]
    np.testing.assert_allclose(trainer.predict([x, *st]), yh.detach().numpy(), rtol=1e-5, atol=1e-6)
    torch.nn.functional.mse_loss(yh, torch.tensor(target)).backward()
    before = trainer.get_params()["w"]
    trainer.train_step([x, *st], target)
    np.testing.assert_allclose(before - trainer.get_params()["w"], tw.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op, attrs, extra, message", [
    ("GRU", {"activations": ["Relu", "Tanh"]}, {}, "GRU with activations ['Relu', 'Tanh']"),
    ("LSTM", {"clip": 1.0}, {}, "LSTM with clip"),
    ("LSTM", {"input_forget": 1}, {}, "LSTM with input_forget=1"),
    ("GRU", {}, {"lens": "input"}, "model input 'lens' has dtype int32; only float32 inputs are supported; "
     "it is read by node 'rec' (GRU): make it a constant of the model"),
    ("RNN", {}, {"lens": np.array([3, 2], np.int32)}, "sequence_lens shorter than the sequence"),
], ids=lambda v: str(v)[:30])
def test_recurrent_refusals(tmp_path, op, attrs, extra, message):
    """Each names the node (the loader refuses integer model inputs first, naming the nodes that
    read them); sequence_lens equal to the sequence length everywhere is accepted."""
    g = GATES[op]
    inits = {"w": rand(1, g * 4, 3), "r": rand(1, g * 4, 4)}
    inputs = {"x": [3, 2, 3]}
    lens = extra.get("lens")
    dynamic = isinstance(lens, str)
    if dynamic:
        inputs["lens"] = [2]
    elif lens is not None:
        inits["lens"] = lens
    attrs = {"hidden_size": 4, **({"linear_before_reset": 1} if op == "GRU" else {}), **attrs}
    node = helper.make_node(op, ["x", "w", "r", "", "lens" if lens is not None else ""], ["y"], name="rec", **attrs)
    model = onnx_model([node], inputs, {"y": [3, 1, 2, 4]}, inits)
    if dynamic:
        model.graph.input[1].type.tensor_type.elem_type = 6  # int32
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    where = "" if dynamic else r"node 'rec' \(" + op + r"\): .*"
    with pytest.raises(UnsupportedError, match=where + re.escape(message)):
        loader.load(path)


# ---- whole models trained side by side with PyTorch ----
STEPS, BATCH, CHANNELS, TIME, CLASSES = 30, 4, 6, 40, 5


class Classifier(torch.nn.Module):
    """Activity classifier: (batch, time, channels) -> recurrent layer -> last step -> Linear. `last`:
    "h_n" reads the final state output (bidirectional: both directions'), "y" reads y[:, -1]."""

    def __init__(self, cell, hidden=12, bidirectional=False, last="h_n"):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = cell(CHANNELS, hidden, batch_first=True, bidirectional=bidirectional)
        self.fc = torch.nn.Linear(hidden * (2 if bidirectional else 1), CLASSES)
        self.last = last

    def forward(self, x):
        y, h = self.rnn(x)
        if self.last == "y":
            return self.fc(y[:, -1])
        h = h[0] if isinstance(h, tuple) else h
        return self.fc(torch.cat([h[-2], h[-1]], 1) if self.rnn.bidirectional else h[-1])


def train_side_by_side(tmp_path, model, dynamo, lr=0.05, momentum=0.9, weight_decay=1e-3):
    """Same weights, same data, 30 steps of SGD with momentum and weight decay. Tolerance (float32):
    every step's loss within 1e-5 relative of PyTorch's, then predictions within 1e-5 (BPTT sums
    over 40 steps in another order than PyTorch's kernels)."""
    path = export_torch(model, torch.zeros(BATCH, TIME, CHANNELS), tmp_path / "rnn.onnx", dynamo=dynamo)
    trainer = compile_model(path, tmp_path / "build", loss="cross_entropy", lr=lr, momentum=momentum,
                            weight_decay=weight_decay)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    worst = classify_alongside(trainer, model, opt, (BATCH, TIME, CHANNELS), CLASSES, STEPS, seed=7)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(BATCH, TIME, CHANNELS)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.tensor(x)).numpy()
    err = float(np.abs(trainer.predict(x) - expected).max())
    print(f"max relative |loss - torch| over {STEPS} steps: {worst:.2e}; max |prediction - torch|: {err:.2e}")
    assert err < 1e-5


@pytest.mark.parametrize("cell, options, dynamo", [
    *((cell, options, dynamo) for cell, options in [(torch.nn.GRU, {}), (torch.nn.LSTM, {}),
                                                    (torch.nn.GRU, {"bidirectional": True})] for dynamo in (True, False)),
    (torch.nn.GRU, {"last": "y"}, True), (torch.nn.LSTM, {"last": "y"}, False)],
    ids=["gru-dynamo", "gru-legacy", "lstm-dynamo", "lstm-legacy", "bigru-dynamo", "bigru-legacy",
         "gru-y-last-dynamo", "lstm-y-last-legacy"])
def test_classifier_vs_torch(tmp_path, cell, options, dynamo):
    train_side_by_side(tmp_path, Classifier(cell, **options), dynamo)


def test_gru_classifier_trains_on_cortex_m4f_like_host(tmp_path):
    """Firmware with the scalar kernels under QEMU against the cffi host build (vector kernels):
    per-epoch losses within rtol 1e-5, final weights within atol 1e-5 (../shared/DECISIONS.md §4)."""
    from test_boards import BATCH as BOARD_BATCH, EPOCHS, SAMPLES, host_training, need, train_on
    need("cortex-m4f")
    path = export_torch(Classifier(torch.nn.GRU), torch.zeros(BOARD_BATCH, TIME, CHANNELS), tmp_path / "gru.onnx",
                        dynamo=True)
    codegen.generate(path, tmp_path / "gru", loss="cross_entropy", lr=0.05, momentum=0.9)
    rng = np.random.default_rng(3)
    y = rng.integers(0, CLASSES, SAMPLES)
    x = (rng.normal(size=(SAMPLES, TIME, CHANNELS)) + 0.5 * y[:, None, None]).astype(np.float32)
    model = (tmp_path / "gru", x, y)
    losses, accuracy, params = host_training(model)
    report, result = train_on(model, "cortex-m4f")
    print(f"GRU on cortex-m4f: losses {report.losses} (host {losses}), max |w - host| "
          f"{np.abs(report.params - params).max():.2e}, {result.work}")
    np.testing.assert_allclose(report.losses, losses, rtol=1e-5)
    np.testing.assert_allclose(report.params, params, atol=1e-5)


def test_gates_are_reported_and_b_is_a_bias(tmp_path):
    """The saved gate values are the arena's largest buffer: `report` names them. B counts as the
    layer's bias (--train-bias-only), W and R as weights (../shared/DECISIONS.md section 1)."""
    path = export_torch(Classifier(torch.nn.GRU), torch.zeros(BATCH, TIME, CHANNELS), tmp_path / "gru.onnx",
                        dynamo=False)
    graph = loader.load(path)
    gru = next(n for n in graph.nodes if n.op == "GRU")
    assert set(training.select_trainable(graph, training.Selection(bias_only=True))) == {gru.inputs[3], "fc.bias"}
    assert set(training.select_trainable(graph, training.Selection(last=1))) == {"fc.weight", "fc.bias"}
    assert set(training.select_trainable(graph, training.Selection(last=2))) == {*gru.inputs[1:4], "fc.weight",
                                                                                  "fc.bias"}
    codegen.generate(path, tmp_path / "build", loss="cross_entropy")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "build")])
    gates = BATCH * TIME * 4 * 12 * 4  # z, r, n, R_n h + Rb_n per unit and step, float32
    assert result.exit_code == 0
    assert f"largest buffers: saved/GRU gates per step/{gru.outputs[0]} ({gates:,} B)" in result.output
