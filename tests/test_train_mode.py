"""generate(mode="train"): PyTorch's model.train() (../shared/DECISIONS.md §5). A small CNN with
BatchNorm (kept by the legacy exporter, not folded) trains side by side with torch's train() mode:
30 steps of SGD with momentum and weight decay at batch 4 (test_train_cnn's side-by-side run) on
4x4 planes in its second BatchNorm (64 values per channel: the unbiased running variance is 64/63
of the biased one, a 1.6% difference that the running statistics show), then predictions against
model.eval(), the running statistics against torch's, the parameter blob's state section, FedAvg
of the state and the exported ONNX in onnxruntime; the same for a DS-CNN.

Tolerance (float32): losses within 1e-5 relative (+1e-6 absolute) of PyTorch's at every step and
weights within 1e-5 after 30 steps (test_train_cnn's), running statistics and predictions within
1e-4 relative (+1e-5 absolute): the batch statistics divide by a batch variance, so the few-ulp
differences of the summation order grow faster than in eval mode. Measured: losses within 9.0e-7
(small CNN) and 4.3e-7 (DS-CNN) relative, weights within 1.0e-6 and 7.6e-7."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the reference of the side-by-side training")
from torch import nn  # noqa: E402

from helpers import compile_model, export_torch  # noqa: E402
from test_train_cnn import BATCH, SAMPLE, load_initializers, train_side_by_side, with_bn_statistics  # noqa: E402
from test_train_cnn import batches as cnn_batches  # noqa: E402

STEPS, CLASSES = 30, 3
LOSS_RTOL, LOSS_ATOL, RTOL, ATOL = 1e-5, 1e-6, 1e-4, 1e-5


def small_cnn(bn_momentum: float = 0.1) -> nn.Module:
    torch.manual_seed(0)
    return with_bn_statistics(nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(2, 4, 3, padding=1), bn1=nn.BatchNorm2d(4, momentum=bn_momentum), relu1=nn.ReLU(),
        conv2=nn.Conv2d(4, 6, 3, stride=2, padding=1), bn2=nn.BatchNorm2d(6, momentum=bn_momentum),
        relu2=nn.ReLU(), flat=nn.Flatten(), fc=nn.Linear(6 * 4 * 4, CLASSES))))


def batches(steps: int = STEPS, batch: int = BATCH, sample=(2, 8, 8)):
    rng = np.random.default_rng(7)
    for _ in range(steps):
        yield (rng.normal(1.0, 2.0, size=(batch, *sample)).astype(np.float32),
               rng.integers(0, CLASSES, size=batch))


def running_stats(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in model.state_dict().items() if "running" in k}


def side_by_side(tmp, model: nn.Module, kind: str):
    """Export with BatchNorm kept, train 30 steps (SGD, momentum, weight decay) here and in
    torch's train() mode (test_train_cnn's run: losses and weights compared): (trainer, torch
    model in eval(), build folder)."""
    trainer, reference = train_side_by_side(tmp, model, kind, dynamo=False, keep_bn=True, mode="train",
                                            momentum=0.9, weight_decay=1e-3)
    return trainer, reference.eval(), tmp / "build"


def assert_like_torch_eval(trainer, model, sample=(2, 8, 8)):
    """Predictions against model.eval() and the running statistics against torch's."""
    x, _ = next(batches(1, sample=sample))
    with torch.no_grad():
        expected = model(torch.tensor(x)).numpy()
    np.testing.assert_allclose(trainer.predict(x), expected, rtol=RTOL, atol=ATOL)
    ours, theirs = trainer.get_state(), running_stats(model)
    assert set(ours) == set(theirs)
    for name, value in ours.items():
        np.testing.assert_allclose(value, theirs[name], rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(trainer, torch model after train(), build folder) after 30 side-by-side steps."""
    return side_by_side(tmp_path_factory.mktemp("train_mode"), small_cnn(), "bn_cnn")


def test_predictions_and_running_statistics_match_torch(trained):
    trainer, model, _ = trained
    assert_like_torch_eval(trainer, model)
    memory = trainer.manifest.memory  # RAM: 2 statistics x (4 + 6) channels, and their round-start copy
    assert memory["running_stats_bytes"] == 80 and memory["round_start_bytes"] == memory["param_bytes"] + 80
    # the unbiased update is what makes them match: 64 values per channel in bn2
    assert not np.allclose(trainer.get_state()["bn2.running_var"], _biased_run(model), rtol=1e-3)


def test_ds_cnn(tmp_path):
    """The DS-CNN keyword spotter (8 channels, 9 BatchNorms incl. depthwise layers) on 20x8
    features: 176 values per channel, so biased and unbiased variance differ by 0.6%. (On 10x4
    features at batch 2, 24 values per channel, the run is chaotic at this learning rate: torch in
    float32 drifts from torch in float64 by 2.6e-5 by step 30, and we from torch by 1.4e-3.)"""
    int8_fit = pytest.importorskip("benchmarks.int8_fit", reason="the DS-CNN builder")
    torch.manual_seed(0)
    model = with_bn_statistics(int8_fit.ds_cnn(channels=8, classes=CLASSES))
    trainer, model, _ = side_by_side(tmp_path, model, "ds_cnn")
    assert len(trainer.get_state()) == 18
    assert_like_torch_eval(trainer, model, sample=(1, 20, 8))


def _biased_run(model):
    """bn2's running variance had torch used the biased variance: the same run recomputed."""
    ref = small_cnn()
    with torch.no_grad():
        for (k, v), (_, w) in zip(ref.state_dict().items(), model.state_dict().items()):
            if "running" not in k and "num_batches" not in k:
                v.copy_(w)
    run = ref.bn2.running_var.clone()
    ref.train()
    for x, _ in cnn_batches(*SAMPLE["bn_cnn"]):
        h = ref.relu1(ref.bn1(ref.conv1(torch.tensor(x))))
        z = ref.conv2(h)
        run = 0.9 * run + 0.1 * z.var(dim=(0, 2, 3), unbiased=False)
    return run.detach().numpy()


def test_inspect_counts_the_running_statistics_under_train(trained):
    """inspect --mode train estimates what generate --mode train builds: the running statistics
    (and their federated round-start copy) are RAM."""
    import json

    from typer.testing import CliRunner

    import codegen
    from codegen.cli import app

    _, _, build = trained
    built = json.loads((build / "mcutrain.json").read_text())
    source, batch = built["source"], built["inputs"][0]["shape"][0]
    rows = {m: codegen.inspect(source, batch=batch, mode=m).memory_by_choice[0].memory for m in ("eval", "train")}
    assert rows["eval"]["running_stats_bytes"] == 0
    assert rows["train"]["running_stats_bytes"] == built["memory"]["running_stats_bytes"] > 0
    result = CliRunner().invoke(app, ["inspect", source, "--batch", str(batch), "--mode", "train", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["memory_by_choice"][0]["running_stats_bytes"] > 0


def test_blob_round_trip_with_state(trained, tmp_path):
    from codegen import blob
    trainer, _, build = trained
    data = trainer.save_params()
    assert data[4:6] == bytes([blob.VERSION, 0]) and blob.VERSION >= 2  # 2 added the state section
    weights = blob.decode_params(data, trainer.manifest)
    assert set(weights) == set(trainer.get_params()) | set(trainer.get_state())
    assert data == blob.encode_params(trainer.weights(), trainer.manifest)  # the same bytes as the C
    before = trainer.get_state()
    trainer.set_state({k: np.zeros_like(v) for k, v in before.items()})
    trainer.load_params(data)
    for name, value in before.items():
        np.testing.assert_array_equal(trainer.get_state()[name], value)
    old = bytearray(data)
    old[4] = 1  # a version-1 blob (no state section) is refused, not misread
    with pytest.raises(Exception, match="format version 1"):
        blob.decode_params(bytes(old), trainer.manifest)


def test_fedavg_averages_the_state(trained):
    from codegen import blob, federated
    trainer, _, _ = trained
    start = trainer.weights()
    trainer.begin_round()
    rng = np.random.default_rng(3)
    clients = []
    for samples in (10, 30):
        shifted = {k: v + rng.normal(size=v.shape).astype(np.float32) for k, v in trainer.get_state().items()}
        trainer.set_state(shifted)
        clients.append((blob.decode_delta(trainer.delta(samples), trainer.manifest)[0], samples))
        trainer.set_state({k: start[k] for k in shifted})
    new = federated.fedavg(start, clients)
    for name in trainer.get_state():
        expected = start[name] + (10 * clients[0][0][name] + 30 * clients[1][0][name]) / 40
        np.testing.assert_allclose(new[name], expected, rtol=1e-6, atol=1e-6)
        assert np.abs(clients[0][0][name]).max() > 0.1


def test_export_predicts_like_torch_eval(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the exported model")
    trainer, model, _ = trained
    trainer.export_onnx(tmp_path / "m.onnx")
    x, _ = next(batches(1))
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.tensor(x)).numpy(), rtol=RTOL, atol=ATOL)


# ---- Dropout in training mode ----
def xorshift32_masks(seed: int, sizes: list[int], ratio: float) -> list[np.ndarray]:
    """The C's stream (runtime_c/kernels/dropout.h) in Python: one draw per element, in order."""
    from codegen.ops.dropout import threshold
    s, out = seed or 1, []
    for n in sizes:
        keep = np.empty(n, bool)
        for i in range(n):
            s ^= (s << 13) & 0xFFFFFFFF
            s ^= s >> 17
            s ^= (s << 5) & 0xFFFFFFFF
            keep[i] = (s >> 8) >= threshold(ratio)
        out.append(keep)
    return out


def dropout_mlp(path, ratio: float, batch: int = 8, training_mode: bool | None = None):
    """x (batch, 16) -> Gemm -> Dropout(ratio) -> Gemm (4): an ONNX model, and its torch twin."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.Dropout(ratio), nn.Linear(32, 4))
    inits = {"w1": net[0].weight, "b1": net[0].bias, "w2": net[2].weight, "b2": net[2].bias}
    inits = [numpy_helper.from_array(v.detach().numpy(), k) for k, v in inits.items()]
    inits.append(numpy_helper.from_array(np.float32(ratio), "ratio"))
    dropout_inputs = ["h", "ratio"]
    if training_mode is not None:
        inits.append(numpy_helper.from_array(np.array(training_mode), "training_mode"))
        dropout_inputs.append("training_mode")
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Dropout", dropout_inputs, ["d"]),
             helper.make_node("Gemm", ["d", "w2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return net


@pytest.mark.parametrize("ratio, training_mode, mode", [(0.3, None, "train"), (0.75, True, "eval")],
                         ids=["mode-train", "onnx-training_mode"])
def test_dropout_gradient_matches_torch_with_the_same_mask(tmp_path, ratio, training_mode, mode):
    net = dropout_mlp(tmp_path / "d.onnx", ratio, training_mode=training_mode)
    trainer = compile_model(tmp_path / "d.onnx", tmp_path / "b", loss="cross_entropy", lr=0.1, mode=mode)
    rng = np.random.default_rng(0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer.set_seed(1234)
    masks = xorshift32_masks(1234, [8 * 32] * 3, ratio)
    for mask in masks:
        x, y = rng.normal(size=(8, 16)).astype(np.float32), rng.integers(0, 4, size=8)
        keep = torch.tensor(mask.reshape(8, 32))
        h = net[0](torch.tensor(x))
        scale = np.float32(1) / np.float32(1 - ratio)
        ref = nn.functional.cross_entropy(net[2](torch.where(keep, h * torch.tensor(scale), 0.0)), torch.tensor(y))
        opt.zero_grad()
        ref.backward()
        opt.step()
        assert trainer.train_step(x, y) == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    params = trainer.get_params()
    for name, p in zip(("w1", "b1", "w2", "b2"), net.parameters()):
        np.testing.assert_allclose(params[name], p.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert abs(1 - np.mean(np.concatenate(masks)) - ratio) < 0.05  # the fraction dropped ~ ratio
    x = rng.normal(size=(8, 16)).astype(np.float32)
    with torch.no_grad():  # predict: Dropout is the identity (model.eval())
        np.testing.assert_allclose(trainer.predict(x), net.eval()(torch.tensor(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_dropout_mask_statistics_and_seed(tmp_path):
    """Through the gradient of a zero bias after the Dropout (mse, labels 0, one step of lr 1):
    b = -2 / n * dropout(x), so the masks are read back exactly from the C."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    n, ratio = 4096, 0.2
    graph = helper.make_graph([helper.make_node("Dropout", ["x", "r"], ["d"]), helper.make_node("Add", ["d", "b"], ["y"])],
                              "d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(np.float32(ratio), "r"),
                               numpy_helper.from_array(np.zeros((1, n), np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "d.onnx"))
    trainer = compile_model(tmp_path / "d.onnx", tmp_path / "b", loss="mse", lr=1.0, mode="train")
    x = np.ones((1, n), np.float32)

    def kept(seed=None):
        if seed is not None:
            trainer.set_seed(seed)
        trainer.set_params({"b": np.zeros((1, n), np.float32)})
        trainer.train_step(x, np.zeros((1, n), np.float32))
        return trainer.get_params()["b"].ravel() != 0

    first = kept(7)
    assert abs(1 - first.mean() - ratio) < 0.02
    np.testing.assert_array_equal(first, xorshift32_masks(7, [n], ratio)[0])
    np.testing.assert_array_equal(kept(7), first)  # set_seed restarts the stream
    second = kept()  # the stream goes on
    assert (second != first).any()
    np.testing.assert_array_equal(second, xorshift32_masks(7, [n, n], ratio)[1])
    np.testing.assert_array_equal(trainer.predict(x), x + trainer.get_params()["b"])  # Dropout passes


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_strict_c(tmp_path, trained, mode):
    """Strict C whatever the mode: a Dropout's ratio constant is not emitted in either form
    (issue 15: '<prefix>_consts' defined but not used), the state and seed functions compile."""
    import shutil
    import subprocess
    from helpers import KERNELS, STRICT
    dropout_mlp(tmp_path / "d.onnx", 0.3)
    import codegen
    codegen.generate(tmp_path / "d.onnx", tmp_path / "d", loss="cross_entropy", mode=mode)
    for build, source in ((tmp_path / "d", "d.c"), (trained[2], f"{trained[0].manifest.name}.c")):
        for cc in [c for c in ("gcc", "clang") if shutil.which(c)]:
            run = subprocess.run([cc, *STRICT, *KERNELS["scalar"], "-fsyntax-only", source], cwd=build,
                                 capture_output=True, text=True)
            assert run.returncode == 0, run.stderr


def test_accumulate_updates_running_statistics_per_micro_batch(tmp_path):
    """--accumulate 2: statistics per micro-batch of 2, running statistics updated twice per step,
    one update from the mean gradient: torch's train() on the same micro-batches."""
    import onnx
    model = small_cnn(bn_momentum=0.3)
    path = export_torch(model, torch.zeros(BATCH, 2, 8, 8), tmp_path / "cnn.onnx", dynamo=False, keep_bn=True)
    load_initializers(model, onnx.load(str(path)).graph)
    trainer = compile_model(path, tmp_path / "build", loss="cross_entropy", mode="train", accumulate=2, lr=0.05,
                            momentum=0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step, (x, y) in enumerate(batches(steps=5, batch=2 * BATCH)):
        opt.zero_grad()
        losses = [nn.functional.cross_entropy(model(torch.tensor(x[k:k + BATCH])), torch.tensor(y[k:k + BATCH]))
                  for k in (0, BATCH)]
        (sum(losses) / 2).backward()
        opt.step()
        assert trainer.train_step(x, y) == pytest.approx(sum(losses).item() / 2, rel=LOSS_RTOL, abs=LOSS_ATOL)
    for name, value in trainer.get_state().items():
        np.testing.assert_allclose(value, running_stats(model)[name], rtol=RTOL, atol=ATOL, err_msg=name)


def test_too_small_a_batch_is_refused(tmp_path):
    """Batch statistics need more than one value per channel (PyTorch refuses it too): exit 2,
    the node and the remedy named, nothing written."""
    from typer.testing import CliRunner
    from codegen.cli import app
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    with_bn_statistics(model)
    path = export_torch(model, torch.zeros(1, 4), tmp_path / "m.onnx", dynamo=False, keep_bn=True)
    result = CliRunner().invoke(app, ["generate", str(path), "-o", str(tmp_path / "out"), "--mode", "train"])
    assert result.exit_code == 2, result.output
    assert "BatchNormalization" in result.output and "batch x spatial size > 1" in result.output
    assert not (tmp_path / "out").exists()
    ok = CliRunner().invoke(app, ["generate", str(path), "-o", str(tmp_path / "eval"), "--mode", "eval"])
    assert ok.exit_code == 0, ok.output


def test_shared_running_statistics_are_refused(tmp_path):
    """A fresh model's BatchNorms have equal statistics, which the legacy exporter merges into
    one initializer (even with the scale of ones): updating it for each node would be wrong, so it
    is refused, pointing to --untie, which gives each node its own."""
    import codegen
    from codegen.errors import UnsupportedError
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    path = export_torch(model, torch.zeros(2, 2, 8, 8), tmp_path / "m.onnx", dynamo=False, keep_bn=True)
    with pytest.raises(UnsupportedError, match="not a constant of its own.*--untie"):
        codegen.generate(path, tmp_path / "out", mode="train")
    summary = codegen.generate(path, tmp_path / "out", mode="train", untie=True)  # PyTorch's names
    assert sorted(s["name"] for s in summary["state"]) == [f"{k}.running_{s}" for k in (1, 4) for s in ("mean", "var")]


@pytest.mark.parametrize("shape, epsilon, momentum", [((4, 3), 1e-5, 0.9), ((2, 3, 5), 1e-2, 0.5),
                                                      ((2, 2, 3, 3), 1e-5, 0.0)])
def test_batchnorm_training_mode_node(tmp_path, shape, epsilon, momentum):
    """One BatchNormalization with training_mode=1 (the ONNX spec): predict and one step's
    gradients (to the input through a zero parameter, scale, bias) against torch's batch_norm in
    training mode, the running statistics against the spec's update (population variance)."""
    from onnx import helper
    from helpers import onnx_model
    rng = np.random.default_rng(1)
    c = shape[1]
    x = rng.normal(1.0, 2.0, size=shape).astype(np.float32)
    inits = {"p0": np.zeros(shape, np.float32), "scale": rng.uniform(0.5, 1.5, c).astype(np.float32),
             "bias": rng.normal(size=c).astype(np.float32), "mean": rng.normal(size=c).astype(np.float32),
             "var": rng.uniform(0.5, 2, c).astype(np.float32)}
    nodes = [helper.make_node("Add", ["x", "p0"], ["a"]),
             helper.make_node("BatchNormalization", ["a", "scale", "bias", "mean", "var"], ["y", "rm", "rv"], epsilon=epsilon,
                              momentum=momentum, training_mode=1)]
    onnx_model(nodes, {"x": list(shape)}, {"y": list(shape)}, inits, path=tmp_path / "bn.onnx")
    trainer = compile_model(tmp_path / "bn.onnx", tmp_path / "b", loss="mse", lr=1.0)
    t = {k: torch.tensor(v, requires_grad=k in ("p0", "scale", "bias")) for k, v in inits.items()}
    y = nn.functional.batch_norm(torch.tensor(x) + t["p0"], None, None, t["scale"], t["bias"], True, 0.0, epsilon)
    np.testing.assert_allclose(trainer.predict(x), y.detach().numpy(), rtol=1e-5, atol=1e-5)
    target = rng.normal(size=shape).astype(np.float32)
    nn.functional.mse_loss(y, torch.tensor(target)).backward()
    before = trainer.get_params()
    trainer.train_step(x, target)
    after = trainer.get_params()
    for name in ("p0", "scale", "bias"):
        np.testing.assert_allclose(before[name] - after[name], t[name].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    axes = tuple(i for i in range(len(shape)) if i != 1)
    state = trainer.get_state()
    np.testing.assert_allclose(state["mean"], momentum * inits["mean"] + (1 - momentum) * x.mean(axes), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["var"], momentum * inits["var"] + (1 - momentum) * x.var(axes), rtol=1e-5, atol=1e-6)
