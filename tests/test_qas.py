"""int8 weight training (generate --update int8, issue 18): int8 weights and int32 biases train on
their integers with quantization-aware scaling and stochastic rounding (codegen/ops/qas.py,
runtime_c/kernels/qas.h, sgd.h mt_sgd_s8/s32). The proof (../shared/DECISIONS.md §4): 30 steps of
the C on the host (scalar kernels) leave the integer state bit for bit where a numpy model of the
same arithmetic does (float sums in the C's order: np.cumsum is sequential), and QEMU (cortex-m4f)
equals the host. The model: x -> Q -> Conv 3x3 (int8, trained) -> Q -> Flatten -> Gemm (int8,
trained) -> Q -> DQ -> y, MSE, per-channel weight scales, int32 biases."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import codegen
import int8_reference as ref
from codegen import blob, elfsize, export, federated, firmware, manifest, qemu
from codegen.errors import DataError
from codegen.errors import McutrainError
from codegen.ops._qlinear import BIAS_LIMIT
from codegen.ops.qas import factors
from helpers import KERNELS, STRICT
from test_cli_errors import run

N, C, H, M, K = 4, 3, 5, 6, 4  # batch, input channels, plane, conv channels, outputs
XS, XZ, CS, CZ, YS, YZ = np.float32(0.05), -3, np.float32(0.04), 5, np.float32(0.03), -2
LR, STEPS = 0.05, 30


def qdq_model(path) -> dict:
    """The QDQ model (as quantize_static writes one) and its integers by name."""
    rng = np.random.default_rng(18)
    w1s = rng.uniform(0.01, 0.03, M).astype(np.float32)
    w2s = rng.uniform(0.002, 0.006, K).astype(np.float32)
    q = {"w1": rng.integers(-100, 101, (M, C, 3, 3)).astype(np.int8), "w1s": w1s,
         "b1": rng.integers(-400, 400, M).astype(np.int32), "b1s": (XS * w1s).astype(np.float32),
         "w2": rng.integers(-100, 101, (K, M * H * H)).astype(np.int8), "w2s": w2s,
         "b2": rng.integers(-4000, 4000, K).astype(np.int32), "b2s": (CS * w2s).astype(np.float32)}
    inits = {**q, "xs": XS, "xz": np.int8(XZ), "cs": CS, "cz": np.int8(CZ), "ys": YS, "yz": np.int8(YZ),
             "w1z": np.zeros(M, np.int8), "b1z": np.zeros(M, np.int32), "w2z": np.zeros(K, np.int8),
             "b2z": np.zeros(K, np.int32)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w1", "w1s", "w1z"], ["W1"], axis=0),
             helper.make_node("DequantizeLinear", ["b1", "b1s", "b1z"], ["B1"], axis=0),
             helper.make_node("Conv", ["xf", "W1", "B1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "cs", "cz"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "cs", "cz"], ["cf"]),
             helper.make_node("Flatten", ["cf"], ["f"]),
             helper.make_node("QuantizeLinear", ["f", "cs", "cz"], ["fq"]),
             helper.make_node("DequantizeLinear", ["fq", "cs", "cz"], ["ff"]),
             helper.make_node("DequantizeLinear", ["w2", "w2s", "w2z"], ["W2"], axis=0),
             helper.make_node("DequantizeLinear", ["b2", "b2s", "b2z"], ["B2"], axis=0),
             helper.make_node("Gemm", ["ff", "W2", "B2"], ["g"], transB=1),
             helper.make_node("QuantizeLinear", ["g", "ys", "yz"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "qas", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (N, C, H, H))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (N, K))],
                              [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    return q


def seqsum(a: np.ndarray, axes: int) -> np.ndarray:
    """The sum over the first `axes` axes in one float32 running sum, in row-major order (C's)."""
    flat = a.reshape(-1, *a.shape[axes:])
    return np.cumsum(flat, axis=0, dtype=np.float32)[-1]


def xorshift32(state: int) -> int:
    state ^= (state << 13) & 0xFFFFFFFF
    state ^= state >> 17
    return state ^ ((state << 5) & 0xFFFFFFFF)


class Reference:
    """The trainer's arithmetic in numpy: the int8 forward (tests/int8_reference.py), MSE, 1-bit
    masks, dX through the int8 head, the QAS gradients and SGD with stochastic rounding."""

    def __init__(self, q: dict, order: list[str], momentum: float = 0.0, decay: float = 0.0):
        self.q, self.order, self.rng, self.momentum, self.decay = q, order, 1, np.float32(momentum), np.float32(decay)
        self.state = {"W1": q["w1"].copy(), "B1": q["b1"].copy(), "W2": q["w2"].copy(), "B2": q["b2"].copy()}
        self.buf = {n: np.zeros(v.shape, np.float32) for n, v in self.state.items()}

    def step(self, x, t):
        s, q = self.state, self.q
        xq = ref.quantize(x, XS, XZ)
        cq = ref.conv(xq, XZ, s["W1"], 0, s["B1"], XS, q["w1s"], CS, CZ, pads=[1, 1, 1, 1])
        f = cq.reshape(N, -1)
        yq = ref.gemm(f, CZ, s["W2"], 0, s["B2"], CS, q["w2s"], YS, YZ, trans_b=1)
        y = ref.dequantize(yq, YS, YZ)
        dy = np.float32(2) * (y - t) / np.float32(y.size)
        dz2 = np.where((yq > -128) & (yq < 127), dy, np.float32(0))
        fx = (f.astype(np.int32) - CZ).astype(np.float32)
        grads = {"B2": factors(CS, q["w2s"], K, True) * seqsum(dz2, 1),
                 "W2": factors(CS, q["w2s"], K, False)[:, None] * seqsum(dz2[:, :, None] * fx[:, None, :], 1)}
        real = q["w2s"][:, None] * s["W2"].astype(np.float32)  # (K, M*H*H), as dequantized one at a time
        df = seqsum(np.moveaxis(dz2[:, :, None] * real[None], 1, 0), 1)  # sum over the outputs n
        dz1 = np.where((cq > -128) & (cq < 127), df.reshape(cq.shape), np.float32(0))
        xp = np.pad(xq.astype(np.int32) - XZ, ((0, 0), (0, 0), (1, 1), (1, 1))).astype(np.float32)
        taps = np.stack([np.stack([xp[:, :, i:i + H, j:j + H] for j in range(3)], -1) for i in range(3)], -2)
        # (n, o, q) first: dz1 (N, M, H, H) x taps (N, C, H, H, 3, 3) -> (N, H, H, M, C, 3, 3)
        prod = dz1.transpose(0, 2, 3, 1)[..., None, None, None] * taps.transpose(0, 2, 3, 1, 4, 5)[:, :, :, None]
        grads["W1"] = factors(XS, q["w1s"], M, False)[:, None, None, None] * seqsum(prod, 3)
        grads["B1"] = factors(XS, q["w1s"], M, True) * seqsum(dz1.transpose(0, 2, 3, 1), 3)
        for name in self.order:
            self.state[name] = self.sgd(s[name], grads[name], self.buf[name])

    def sgd(self, w: np.ndarray, g: np.ndarray, buf: np.ndarray) -> np.ndarray:
        """mt_sgd_s8/s32 (momentum, weight decay) or the fused plain step of qas.h."""
        lo, hi = (-128, 127) if w.dtype == np.int8 else (-BIAS_LIMIT, BIAS_LIMIT)
        g = g.astype(np.float32) + self.decay * w.astype(np.float32)
        if self.momentum:
            buf[...] = self.momentum * buf + g
            g = buf
        steps = np.empty(w.size, np.float32)
        for i, gi in enumerate(g.ravel()):
            self.rng = xorshift32(self.rng)
            u = np.float32(self.rng >> 8) * np.float32(1 / 16777216)
            steps[i] = np.floor(u - np.float32(LR) * gi)
        return np.clip(w.astype(np.int64).ravel() + steps.astype(np.int64), lo, hi).astype(w.dtype).reshape(w.shape)


NAMES = {"W1": "W1", "B1": "B1", "W2": "W2", "B2": "B2"}  # the model's float names are the parameters'


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qas")
    q = qdq_model(folder / "qas.onnx")
    codegen.generate(folder / "qas.onnx", folder / "b", loss="mse", lr=LR, update="int8", federated=False)
    return folder, q


def _order(folder, fused: bool) -> list[str]:
    """The parameters in the order their updates draw random numbers: fused, in their gradient's
    kernel (its place in the schedule); otherwise at their SGD node."""
    graph = onnx.load(str(folder / "training_model.onnx")).graph
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output}
    updates = [(producer[n.input[1]] if fused else i, n.input[0]) for i, n in enumerate(graph.node) if n.op_type == "SGD"]
    return [name for _, name in sorted(updates)]


def _equal_steps(folder, reference: Reference) -> dict[str, np.ndarray]:
    """STEPS steps of the C (scalar kernels) and the reference: integer state equal after each."""
    trainer = codegen.load_host(folder, KERNELS["scalar"])
    xs, ts = data(STEPS)
    for k in range(STEPS):
        trainer.train_step(xs[k], ts[k])
        reference.step(xs[k], ts[k])
        got = trainer.get_params()
        for name, want in reference.state.items():
            assert got[name].dtype == want.dtype and np.array_equal(got[name], want), \
                f"step {k}: {name} differs in {np.count_nonzero(got[name] != want)} of {want.size}"
    return got


def data(steps: int):
    rng = np.random.default_rng(3)
    return (rng.standard_normal((steps, N, C, H, H)).astype(np.float32),
            (rng.standard_normal((steps, N, K)) * 0.5).astype(np.float32))


def test_int8_update_equals_numpy_reference(build):
    """Plain SGD, fused into the gradient kernels."""
    folder, q = build
    m = manifest.read(folder / "b")
    assert {p.name: p.dtype for p in m.params} == {"B1": "int32", "W1": "int8", "B2": "int32", "W2": "int8"}
    assert m.memory["param_bytes"] == 164 + K * M * H * H + 4 * (M + K)  # a byte per weight (162 -> whole words)
    ops = {n.op_type for n in onnx.load(str(folder / "b" / "training_model.onnx")).graph.node}
    assert not {"Conv", "Gemm"} & ops
    buffers = json.loads((folder / "b" / "memory.json").read_text())["buffers"]
    assert not [b for b in buffers if "GradW" in b["name"] or "QasGradB" in b["name"]]  # no gradient of the integers
    got = _equal_steps(folder / "b", Reference(q, _order(folder / "b", fused=True)))
    moved = {n: int(np.abs(got[n].astype(np.int64) - q[n.lower()]).sum()) for n in NAMES}
    assert all(moved.values()), moved  # every tensor trained
    flat = blob.pack(got, m.params)
    assert flat.nbytes == sum(p.words for p in m.params) * 4 < 4 * sum(p.size for p in m.params) / 3


def test_momentum_and_weight_decay_equal_numpy_reference(tmp_path):
    """SGD with momentum (float32 buffers, not fused) and weight decay."""
    q = qdq_model(tmp_path / "qas.onnx")
    codegen.generate(tmp_path / "qas.onnx", tmp_path / "b", loss="mse", lr=LR, update="int8", federated=False,
                     momentum=0.9, weight_decay=0.01)
    _equal_steps(tmp_path / "b", Reference(q, _order(tmp_path / "b", fused=False), momentum=0.9, decay=0.01))


def test_board_equals_host(build):
    """cortex-m4f under QEMU (the DSP int8 convolution, scalar float kernels) trains the same
    integers as the host."""
    from test_boards import need

    need("cortex-m4f")
    folder, _ = build
    out = folder / "b"
    xs, ts = data(2)
    trainer = codegen.load_host(out, KERNELS["scalar"])
    for k in range(2):
        trainer.train_step(xs[k], ts[k])
    firmware.build(out, "cortex-m4f", xs.reshape(-1, C, H, H), ts.reshape(-1, K), epochs=1)
    result = qemu.run(out, "cortex-m4f", timeout=60)
    assert result.code == 0, result.output[-2000:]
    report = firmware.parse_output(result.output)
    host = blob.pack(trainer.get_params(), manifest.read(out).params)
    assert report.done and report.params.tobytes() == host.tobytes()
    parts = {p.what: p for p in elfsize.measure(out / "cortex-m4f" / "firmware.elf", "qas").parts}
    assert parts["trainable parameters"].bytes == host.nbytes and parts["trainable parameters"].region == "RAM"


def test_refusals(tmp_path):
    """--update int8 on a float model (exit 2) or with Adam: refused, nothing written."""
    qdq_model(tmp_path / "qas.onnx")
    float_model = tmp_path / "float.onnx"
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"])], "f",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 3))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (2, 2))],
                              [numpy_helper.from_array(np.ones((3, 2), np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(float_model))
    code, output = run("generate", float_model, "-o", tmp_path / "out", "--update", "int8")
    assert code == 2 and "no QuantizeLinear/DequantizeLinear" in output and "--quantize int8" in output
    with pytest.raises(McutrainError, match="--optimizer adam is not supported"):
        codegen.generate(tmp_path / "qas.onnx", tmp_path / "out", loss="mse", update="int8", optimizer="adam")
    assert not (tmp_path / "out").exists()


def test_export_runs_in_onnxruntime(build, tmp_path):
    """export writes the trained integers into the QDQ model: onnxruntime's output is the C's
    within one output quantization step."""
    ort = pytest.importorskip("onnxruntime")
    folder, q = build
    trainer = codegen.load_host(folder / "b")
    xs, ts = data(3)
    for k in range(3):
        trainer.train_step(xs[k], ts[k])
    trainer.export_onnx(tmp_path / "trained.onnx")
    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "trained.onnx")).graph.initializer}
    params = trainer.get_params()
    assert all(np.array_equal(stored[n.lower()], params[n]) for n in NAMES)
    assert not np.array_equal(stored["w2"], q["w2"])
    got = ort.InferenceSession(str(tmp_path / "trained.onnx")).run(None, {"x": xs[0]})[0]
    assert np.abs(got - trainer.predict(xs[0])).max() <= YS * 1.001


def test_train_channels_stay_int8(tmp_path):
    """--train-channels on an int8 layer (with its bias, SGD with momentum): the trained channels
    are int8 parameters, the rest int8 constants, both parts and their join run in integer
    arithmetic; export runs in onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    q = qdq_model(tmp_path / "qas.onnx")
    codegen.generate(tmp_path / "qas.onnx", tmp_path / "b", loss="mse", lr=LR, update="int8", federated=False,
                     train_channels="W1:0.5", train_bias_last=2, momentum=0.9)  # momentum: not fused
    ops = [n.op_type for n in onnx.load(str(tmp_path / "b" / "training_model.onnx")).graph.node]
    assert ops.count("QLinearConv") == 2 and "QLinearConcat" in ops and not {"Conv", "Gemm", "Concat"} & set(ops)
    trainer = codegen.load_host(tmp_path / "b")
    xs, ts = data(3)
    for k in range(3):
        trainer.train_step(xs[k], ts[k])
    params = trainer.get_params()  # the layer's trainable bias is split with it: each part's int32 bias
    assert {n: v.dtype for n, v in params.items()} == {"W1[:3]": np.int8, "B1[:3]": np.int32, "B1[3:]": np.int32,
                                                       "B2": np.int32}
    assert not np.array_equal(params["W1[:3]"], q["w1"][:3])
    trainer.export_onnx(tmp_path / "trained.onnx")
    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "trained.onnx")).graph.initializer}
    assert np.array_equal(stored["w1"], np.concatenate([params["W1[:3]"], q["w1"][3:]]))
    assert np.array_equal(stored["b1"], np.concatenate([params["B1[:3]"], params["B1[3:]"]]))
    got = ort.InferenceSession(str(tmp_path / "trained.onnx")).run(None, {"x": xs[0]})[0]
    assert np.abs(got - trainer.predict(xs[0])).max() <= YS * 1.001


def test_federated_deltas(tmp_path):
    """A federated build's delta is MTDI (blob format 3): the exact integer differences, the same
    bytes from the C and from Python; FedAvg of two clients gives the nearest integers of the
    weighted average, which the device loads bit for bit; a version-2 message is refused."""
    qdq_model(tmp_path / "qas.onnx")
    out = tmp_path / "b"
    codegen.generate(tmp_path / "qas.onnx", out, loss="mse", lr=LR, update="int8", train="*2")
    for cc in ("gcc", "clang"):  # the MTDI delta code, strict
        if shutil.which(cc):
            subprocess.run([cc, *STRICT, "-c", "qas.c", "-o", f"qas_{cc}.o"], cwd=out, check=True)
    m = manifest.read(out)
    start = export.initial_params(out, m)
    xs, ts = data(4)
    clients = []
    for k, samples in ((0, 12), (2, 4)):
        trainer = codegen.load_host(out)
        trainer.begin_round()
        trainer.train_step(xs[k], ts[k])
        trainer.train_step(xs[k + 1], ts[k + 1])
        message = trainer.delta(samples, int8=True)
        assert message[:4] == blob.DELTA_INT and len(message) == blob.sizes(m)[blob.DELTA_INT]
        assert message == blob.encode_delta(federated.delta(trainer.weights(), start), samples, m)
        change, n = federated.validate(message, m, f"client {k}")
        for name, value in trainer.get_params().items():
            assert np.array_equal(change[name], value.astype(np.int64) - start[name])
        clients.append((change, n))
    new = federated.fedavg(start, clients)
    for name, value in new.items():
        mean = start[name] + (12 * clients[0][0][name] + 4 * clients[1][0][name]) / 16
        assert value.dtype == start[name].dtype and np.array_equal(value, np.rint(mean))
    trainer.apply_global(blob.encode_params(new, m))
    assert all(np.array_equal(trainer.get_params()[n], v) for n, v in new.items())
    old = bytearray(message)
    old[4:6] = (2).to_bytes(2, "little")
    with pytest.raises(DataError, match="format version 2"):
        blob.decode_delta(bytes(old), m)
