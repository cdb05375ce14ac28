"""Large models: initial values embedded as binary files (.incbin, hex words as the fallback)
give the same bits as C float literals, in the same memory (const in flash, parameters in RAM),
for every consumer of a build folder; and the memory planner stays fast on thousands of buffers.
`python -m benchmarks.large_model` measures an 11M-parameter ResNet-18 end to end."""
from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from onnx import helper, numpy_helper

import codegen
from codegen import emit, firmware, library, loader, memory, qemu, training
from helpers import KERNELS, STRICT, onnx_model
from test_boards import APP, CMAKE, need

# Bits a decimal round trip or a flush-to-zero could lose: signed zero, subnormals, the extremes.
SPECIAL = np.array([-0.0, 1e-45, -1e-45, 1.1754942e-38, 1.1754944e-38, 1 / 3, -np.pi, 6.1e-5], np.float32)


def _values(rng, shape, specials=SPECIAL) -> np.ndarray:
    v = rng.normal(0, 0.5, shape).astype(np.float32).ravel()
    v[:len(specials)] = specials
    return v.reshape(shape)


def special_model(path, extremes: bool = True) -> onnx.ModelProto:
    """Gemm (frozen when only bn.* and fc.* train) -> BatchNorm (running statistics: constants) ->
    Relu -> Gemm; special values in every blob, +-Inf and FLT_MAX in the last bias if `extremes`."""
    rng = np.random.default_rng(0)
    last = [np.inf, -np.inf, 3.4028235e38, -0.0, 1e-45] if extremes else SPECIAL[:5]
    inits = {"hidden.weight": _values(rng, (8, 6)), "hidden.bias": _values(rng, (8,)),
             "bn.scale": _values(rng, (8,)), "bn.bias": _values(rng, (8,)),
             "bn.mean": _values(rng, (8,)), "bn.var": np.abs(_values(rng, (8,))) + np.float32(0.5),
             "fc.weight": _values(rng, (5, 8)), "fc.bias": np.array(last, np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "hidden.weight", "hidden.bias"], ["h"], transB=1),
             helper.make_node("BatchNormalization", ["h", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Gemm", ["r", "fc.weight", "fc.bias"], ["y"], transB=1)]
    return onnx_model(nodes, {"x": [4, 6]}, {"y": [4, 5]}, inits, path=path)


def generate(path, out, embed: bool, name="net"):
    """Generate with every non-zero blob embedded (threshold 0) or as float literals."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(emit, "EMBED_BYTES", 0 if embed else emit.EMBED_BYTES)
        codegen.generate(path, out, loss="mse", train=["bn.*", "fc.*"], name=name)
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embed")
    model = special_model(tmp / "special.onnx")
    return model, {embed: generate(tmp / "special.onnx", tmp / str(embed), embed) for embed in (False, True)}


def test_embedded_values_are_bit_exact(builds):
    """get_params right after loading is the ONNX initializers bit for bit; predict and the first
    delta (round-start copy) are the same bits as the float-literal build's, through .incbin and
    through the hex-word fallback; predict agrees with onnxruntime."""
    model, folders = builds
    assert {"net_params.bin", "net_params.inc", "net_frozen.bin", "net_consts.bin"} <= {
        p.name for p in folders[True].iterdir()}
    assert not list(folders[False].glob("*.bin"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    runs = []
    for folder, flags in ((folders[False], None), (folders[True], None), (folders[True], ["-DMT_NO_INCBIN"])):
        trainer = codegen.load_host(folder, flags)
        for name, value in trainer.get_params().items():
            assert value.tobytes() == inits[name].tobytes(), (folder, flags, name)
        runs.append((trainer.predict(x).tobytes(), trainer.delta(1)))
    assert runs[1] == runs[0] and runs[2] == runs[0]
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.frombuffer(runs[0][0], np.float32).reshape(4, 5), theirs, rtol=1e-5, atol=1e-6)


def _sections(obj) -> dict[str, dict]:
    """Symbol -> the header of the section it lives in."""
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        return {s.name: elf.get_section(s["st_shndx"]).header
                for s in elf.get_section_by_name(".symtab").iter_symbols() if isinstance(s["st_shndx"], int)}


@pytest.mark.parametrize("kernels", sorted(KERNELS))
@pytest.mark.parametrize("fallback", [False, True], ids=["incbin", "hex-words"])
@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_embedded_c_is_strict_and_const_stays_in_flash(builds, cc, fallback, kernels):
    """Also every kernel flavour: on this model gcc 12 once warned (-Wstringop-overflow) of the
    vector tiles' partial store, a false positive vec.h now silences."""
    if not shutil.which(cc):
        pytest.skip(f"{cc} not installed (CI installs it)")
    folder = builds[1][True]
    obj = f"net_{cc}_{fallback}_{kernels}.o"
    subprocess.run([cc, *STRICT, *KERNELS[kernels], *(["-DMT_NO_INCBIN"] if fallback else []), "-c", "net.c",
                    "-o", obj], cwd=folder, check=True)
    if fallback:
        return
    sections = _sections(folder / obj)
    for symbol, writable in (("net_params", True), ("net_round_start", True), ("net_frozen", False),
                             ("net_consts", False)):
        header = sections[symbol]
        assert bool(header["sh_flags"] & SH_FLAGS.SHF_WRITE) == writable, symbol
        assert header["sh_type"] == "SHT_PROGBITS" and header["sh_size"] >= 4 * 8, symbol


def test_embedded_firmware_runs_like_the_literal_one(tmp_path):
    """Cortex-M4F under QEMU: the embedded build prints the same losses and weights."""
    need("cortex-m4f")
    path = tmp_path / "m.onnx"
    special_model(path, extremes=False)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(16, 6)).astype(np.float32), rng.uniform(size=(16, 5)).astype(np.float32)
    outputs = []
    for embed in (False, True):
        folder = generate(path, tmp_path / str(embed), embed)
        firmware.build(folder, "cortex-m4f", x, y, epochs=2)
        run = qemu.run(folder, "cortex-m4f", timeout=60)
        assert run.code == 0 and firmware.parse_output(run.output).done, run.output[-2000:]
        outputs.append(firmware.parse_output(run.output))
    assert outputs[0].losses.tobytes() == outputs[1].losses.tobytes()
    assert outputs[0].params.tobytes() == outputs[1].params.tobytes()


def test_embedded_library_builds_in_fresh_cmake_project(tmp_path):
    """The drop-in library ships the data files; CMake finds them through its include path."""
    if not shutil.which("cmake"):
        pytest.skip("cmake not installed (apt-get install cmake)")
    path = tmp_path / "m.onnx"
    special_model(path, extremes=False)
    folder = generate(path, tmp_path / "b", True, name="mlp")
    lib = library.build_library(folder, "host", tmp_path / "lib" / "mlp")
    assert {"mlp_params.bin", "mlp_params.inc", "mlp_frozen.bin"} <= {p.name for p in (lib / "src").iterdir()}
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.c").write_text(APP)
    (tmp_path / "app" / "CMakeLists.txt").write_text(CMAKE)
    subprocess.run(["cmake", "-S", tmp_path / "app", "-B", tmp_path / "cm", f"-DMLP_DIR={lib}"], check=True,
                   capture_output=True)
    subprocess.run(["cmake", "--build", tmp_path / "cm"], check=True, capture_output=True)
    ran = subprocess.run([tmp_path / "cm" / "app"], check=True, capture_output=True, text=True)
    assert ran.stdout.startswith("loss ")


def dense_block(path, layers: int, growth: int = 4, channels: int = 8):
    """A DenseNet block of `layers` 1x1 Conv + Relu layers, each reading the concatenation of all
    earlier features: the training graph has about layers^2 / 2 buffers (2,278 at 64)."""
    rng = np.random.default_rng(0)
    nodes, inits, features = [], {}, ["x"]
    for i in range(layers):
        inits[f"w{i}"] = rng.normal(0, 0.1, (growth, channels + growth * i, 1, 1)).astype(np.float32)
        nodes += [helper.make_node("Concat", list(features), [f"cat{i}"], axis=1),
                  helper.make_node("Conv", [f"cat{i}", f"w{i}"], [f"conv{i}"], kernel_shape=[1, 1]),
                  helper.make_node("Relu", [f"conv{i}"], [f"f{i}"])]
        features.append(f"f{i}")
    inits["fc"] = rng.normal(0, 0.1, (10, channels + growth * layers)).astype(np.float32)
    nodes += [helper.make_node("Concat", features, ["all"], axis=1),
              helper.make_node("GlobalAveragePool", ["all"], ["gap"]), helper.make_node("Flatten", ["gap"], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc"], ["y"], transB=1)]
    return onnx_model(nodes, {"x": [1, channels, 4, 4]}, {"y": [1, 10]}, inits, path=path)


def _timed_plan(tg) -> tuple[memory.MemoryPlan, float]:
    t0 = time.perf_counter()
    plan = memory.plan(tg)
    return plan, time.perf_counter() - t0


def test_planner_is_fast_on_thousands_of_buffers(tmp_path, monkeypatch):
    """DenseNet-64 (2,278 buffers): its greedy plan is within the tolerance of the lower bound,
    so no local search runs; forced (tolerance 0), the search keeps to its budget and never
    returns a larger arena than the greedy plan."""
    dense_block(tmp_path / "dense.onnx", 64)
    tg = training.build(loader.load(tmp_path / "dense.onnx"), "cross_entropy", training.Optimizer(0.1))
    greedy, greedy_s = _timed_plan(tg)
    monkeypatch.setattr(memory, "TOLERANCE", 0.0)
    searched, searched_s = _timed_plan(tg)
    print(f"{len(greedy.buffers)} buffers, lower bound {greedy.lower_bound} B: greedy {greedy.arena_bytes} B "
          f"in {greedy_s:.1f} s ({greedy.order}), forced search {searched.arena_bytes} B in {searched_s:.1f} s")
    assert len(greedy.buffers) >= 2000 and not greedy.order.startswith("local search")
    assert greedy_s < 10 and searched_s < 10
    assert greedy.lower_bound <= searched.arena_bytes <= greedy.arena_bytes
