"""Budgeted sparse update (codegen/sparse_schemes.py): `inspect --ram-budget` proposals and
`generate --auto-sparse`. Every proposal fits the budget by the built trainer's own summary; the
heuristic ranking follows the documented order; contribution analysis (measured gains) picks a
scheme that trains at least as well as the heuristic one on a task the heuristics misjudge."""
from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import helper

import codegen
from codegen import fit, loader, sparse_schemes
from codegen.budget import ram_bytes
from codegen.sparse_schemes import Scheme, Space, heuristic_gain, score
from helpers import onnx_model
from test_cli_errors import expect_error, run


def _conv(rng, name, cin, cout, k, group=1):
    w = (rng.normal(size=(cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)).astype(np.float32)
    return {f"{name}.weight": w, f"{name}.bias": rng.normal(0, 0.1, cout).astype(np.float32)}


def mobilenet(path, batch=2):
    """stem conv, two inverted-residual blocks (1x1 expand, ReLU, 3x3 depthwise, ReLU, 1x1 project,
    skip), global average, Linear: the structure the heuristics know."""
    rng = np.random.default_rng(0)  # the same model whichever tests ran before (xdist)
    inits = {**_conv(rng, "stem", 3, 8, 3)}
    nodes = [helper.make_node("Conv", ["x", "stem.weight", "stem.bias"], ["s"], pads=[1] * 4, strides=[2, 2]),
             helper.make_node("Relu", ["s"], ["a0"])]
    for b in (1, 2):
        inits.update({**_conv(rng, f"b{b}.expand", 8, 24, 1), **_conv(rng, f"b{b}.dw", 24, 24, 3, group=24),
                      **_conv(rng, f"b{b}.project", 24, 8, 1)})
        x, p = f"a{b - 1}", f"b{b}"
        nodes += [helper.make_node("Conv", [x, f"{p}.expand.weight", f"{p}.expand.bias"], [f"{p}e"]),
                  helper.make_node("Relu", [f"{p}e"], [f"{p}er"]),
                  helper.make_node("Conv", [f"{p}er", f"{p}.dw.weight", f"{p}.dw.bias"], [f"{p}d"], group=24,
                                   pads=[1] * 4),
                  helper.make_node("Relu", [f"{p}d"], [f"{p}dr"]),
                  helper.make_node("Conv", [f"{p}dr", f"{p}.project.weight", f"{p}.project.bias"], [f"{p}p"]),
                  helper.make_node("Add", [x, f"{p}p"], [f"a{b}"])]
    inits.update({"head.weight": rng.normal(0, 0.3, (4, 8)).astype(np.float32), "head.bias": np.zeros(4, np.float32)})
    nodes += [helper.make_node("GlobalAveragePool", ["a2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "head.weight", "head.bias"], ["y"], transB=1)]
    onnx_model(nodes, {"x": [batch, 3, 8, 8]}, {"y": [batch, 4]}, inits, path=path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return mobilenet(tmp_path_factory.mktemp("m") / "mbv2.onnx")


def _ram(model, **selection) -> int:
    """The RAM of a trainable set (full training without one), as inspect plans it."""
    rows = codegen.inspect(model, momentum=0.9, **selection).memory_by_choice
    return ram_bytes(next(r for r in rows if r.choice == ("your choice" if selection else "full training")).memory)


def test_proposals_fit_the_budget(tmp_path, model):
    """Each proposal's RAM is what generate builds with its options, and within the budget."""
    budget = (_ram(model, train_last=1) + _ram(model)) // 2
    report = codegen.inspect(model, momentum=0.9, ram_budget=budget)
    assert report.schemes and report.schemes[0].proxy == "heuristics"
    assert [r.score for r in report.schemes] == sorted((r.score for r in report.schemes), reverse=True)
    for k, row in enumerate(report.schemes):
        summary = codegen.generate(model, tmp_path / str(k), loss="cross_entropy", momentum=0.9,
                                   **_api_options(row.options))
        assert ram_bytes(summary["memory"]) == row.ram_bytes <= budget, row.options
    code, text = run("inspect", model, "--momentum", "0.9", "--ram-budget", budget, "--json")
    as_json = json.loads(text)
    assert code == 0 and as_json == report.to_json()
    assert as_json["schema"] == 2 and as_json["ram_budget"] == budget
    assert as_json["schemes"][0]["options"] == report.schemes[0].options
    assert as_json["schemes"][0]["ram_bytes"] == report.schemes[0].ram_bytes


def _api_options(options: str) -> dict:
    """The command-line options of a scheme as generate()'s keyword arguments."""
    words = options.split()
    kwargs = {"train_channels": [w.strip("'") for a, w in zip(words, words[1:]) if a == "--train-channels"]}
    for a, w in zip(words, words[1:]):
        if a in ("--train-last", "--train-bias-last"):
            kwargs[a[2:].replace("-", "_")] = int(w)
    return kwargs


def test_heuristic_order(model):
    """Later layers first, the first pointwise conv of a block ahead of the other convs, biases
    before weights (a weight trains with every bias after it), more channels and more biases score
    more, with diminishing returns."""
    space = Space.of(loader.load(model))
    ranks = {c.weight: (c.rank, c.pw1, c.reach) for c in space.candidates}
    assert ranks == {"b2.project.weight": (2, False, 2), "b2.expand.weight": (4, True, 4),
                     "b2.dw.weight": (3, False, 3), "b1.expand.weight": (7, True, 7)}
    # values 1/2, 2/4 (ties: the later first), 1/3, 2/7; b1.project (1/5) is fifth: left out
    assert [c.weight for c in space.candidates] == ["b2.project.weight", "b2.expand.weight", "b2.dw.weight",
                                                    "b1.expand.weight"]
    gain = heuristic_gain(space)
    s = lambda *a: score(space, gain, Scheme(*a))  # noqa: E731
    assert s(True, 2) - s(True, 1) > s(True, 3) - s(True, 2) > 0  # biases: later first, plateauing
    assert s(True, 0) > s(False, 3)  # the classifier first
    assert s(True, 4, (("b2.expand.weight", 0.5),)) > s(True, 4, (("b2.dw.weight", 0.5),))
    assert s(True, 7, (("b2.dw.weight", 0.25),)) > s(True, 7, (("b1.expand.weight", 0.25),))
    assert [s(True, 4, (("b2.expand.weight", r),)) for r in sparse_schemes.RATIOS] == \
        sorted(s(True, 4, (("b2.expand.weight", r),)) for r in sparse_schemes.RATIOS)
    big = codegen.inspect(model, ram_budget=10**9).schemes[0]  # all fits: every bias, the 4 weights whole
    assert big.options == ("--train-last 1 --train-bias-last 8 --train-channels b1.expand.weight:1 "
                           "--train-channels b2.expand.weight:1 --train-channels b2.dw.weight:1 "
                           "--train-channels b2.project.weight:1")



def test_finalists_are_ranked_as_whole_schemes(model):
    """The additive proxy only shortlists: measured gains need not add up, so each finalist is
    ranked by the gain of the whole scheme. Here a weight helps only while few biases train (as a
    layer's channels add little once the biases of every layer learn)."""
    space = Space.of(loader.load(model))

    def gain(s: Scheme) -> float:
        return s.bias_last + (10 * sum(r for _, r in s.weights) if s.bias_last < 5 else 0)

    def memory_of(s: Scheme) -> dict:  # RAM grows with the biases and the channels
        return {"arena_bytes": 1000 + 10 * s.bias_last + int(100 * sum(r for _, r in s.weights)),
                "param_bytes": 0, "optimizer_state_bytes": 0}

    proposals = sparse_schemes.propose(space, memory_of, 10**9, gain)
    assert max(proposals[1:], key=lambda p: score(space, gain, p.scheme)).scheme.weights  # the proxy's pick
    assert proposals[0].scheme == Scheme(True, len(space.biases)) and proposals[0].score == len(space.biases)

def _toy(tmp_path, n=256):
    """An MLP whose first layer ignores the two features the new labels depend on: only training
    that layer's weights can help, which the heuristics (later layers first) cannot know."""
    rng = np.random.default_rng(1)
    w1 = (rng.normal(size=(16, 32)) / 4).astype(np.float32)
    w1[:, :2] = 0
    inits = {"fc1.weight": w1, "fc1.bias": np.full(16, 0.5, np.float32),
             "fc2.weight": (rng.normal(size=(16, 16)) / 4).astype(np.float32), "fc2.bias": np.full(16, 0.1, np.float32),
             "head.weight": (rng.normal(size=(3, 16)) / 4).astype(np.float32), "head.bias": np.zeros(3, np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h1"], transB=1),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Gemm", ["r1", "fc2.weight", "fc2.bias"], ["h2"], transB=1),
             helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("Gemm", ["r2", "head.weight", "head.bias"], ["y"], transB=1)]
    onnx_model(nodes, {"x": [8, 32]}, {"y": [8, 3]}, inits, path=tmp_path / "toy.onnx")
    x = rng.normal(size=(2 * n, 32)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    np.savez(tmp_path / "calib.npz", x=x[:n], y=y[:n])
    return tmp_path / "toy.onnx", (x[:n], y[:n]), (x[n:], y[n:])


def test_contribution_analysis_beats_heuristics(tmp_path, monkeypatch):
    """The budget fits fc1 at 1/4 of its channels or fc2 at 1/2: the heuristics take fc2 (later),
    the measured gains fc1, which alone sees the features that matter."""
    monkeypatch.setattr(sparse_schemes, "RATIOS", (0.25, 0.5))  # fewer candidates: fewer builds
    path, train, held_out = _toy(tmp_path)
    options = dict(loss="cross_entropy", lr=0.1, momentum=0.9)
    budget = _ram(path, train_last=1, train_bias_last=3, train_channels="fc1.weight:0.25")
    heuristic = codegen.generate(path, tmp_path / "h", ram_budget=budget, auto_sparse=True, **options)
    measured = codegen.generate(path, tmp_path / "c", ram_budget=budget, auto_sparse=True,
                                calibration=tmp_path / "calib.npz", **options)
    assert heuristic["auto_sparse"]["proxy"] == "heuristics"
    assert measured["auto_sparse"]["proxy"] == "contribution analysis"
    assert "fc1.weight" not in heuristic["auto_sparse"]["options"]
    assert "fc1.weight" in measured["auto_sparse"]["options"]
    accuracy = {}
    for name in "hc":
        trainer = codegen.load_host(tmp_path / name)
        list(fit.fit(trainer, *train, epochs=5))
        accuracy[name] = fit.evaluate(trainer, *held_out).value
    print(accuracy)
    assert accuracy["c"] >= accuracy["h"], accuracy


def test_generate_auto_sparse_builds_and_trains(tmp_path, model):
    budget = (_ram(model, train_last=1) + _ram(model)) // 2
    out = tmp_path / "out"
    code, text = run("generate", model, "-o", out, "--loss", "cross_entropy", "--momentum", "0.9", "--lr", "0.05",
                     "--ram-budget", budget, "--auto-sparse", "--freeze", "b2.dw.*")
    assert code == 0, text
    best = codegen.inspect(model, momentum=0.9, ram_budget=budget, freeze="b2.dw.*").schemes[0]
    assert f"auto-sparse scheme: {best.options}" in " ".join(text.split())
    manifest = json.loads((out / "mcutrain.json").read_text())
    assert ram_bytes(manifest["memory"]) == best.ram_bytes <= budget
    assert not any(p["name"].startswith("b2.dw") for p in manifest["params"])
    trainer = codegen.load_host(out)
    x = np.random.default_rng(2).normal(size=(2, 3, 8, 8)).astype(np.float32)
    y = np.array([1, 3])
    losses = [trainer.train_step(x, y) for _ in range(20)]
    assert losses[-1] < 0.5 * losses[0]


def test_auto_sparse_with_int8_frozen_layers(tmp_path, model):
    """--quantize int8 --calibration FILE without labels: the scheme is searched on the quantized
    model and ranked by heuristics (the file only calibrates)."""
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(3).normal(size=(4, 3, 8, 8)).astype(np.float32))
    options = dict(loss="cross_entropy", quantize="int8", calibration=tmp_path / "x.npz", federated=False)
    budget = ram_bytes(codegen.generate(model, tmp_path / "one", train_last=1, train_bias_last=8,
                                        train_channels="b2.expand.weight:0.5", **options)["memory"])
    summary = codegen.generate(model, tmp_path / "auto", ram_budget=budget, auto_sparse=True, **options)
    chosen = summary["auto_sparse"]
    assert chosen["proxy"] == "heuristics" and ram_bytes(summary["memory"]) == chosen["ram_bytes"] <= budget
    assert "--train-channels" in chosen["options"] and (tmp_path / "auto" / "quantized_model.onnx").is_file()


def test_refusals(tmp_path, model):
    out = ["-o", tmp_path / "out", "--loss", "cross_entropy"]
    expect_error(tmp_path, ["generate", model, *out, "--ram-budget", 100, "--auto-sparse"],
                 "no sparse update scheme fits --ram-budget 100 B", "the smallest, '--train-bias-last 1', needs")
    expect_error(tmp_path, ["inspect", model, "--ram-budget", 100], "the smallest, '--train-bias-last 1', needs")
    expect_error(tmp_path, ["inspect", model, "--ram-budget", 100, "--freeze", "head.bias"],
                 "the smallest, '--train-last 1', needs")  # the last bias frozen: the classifier's weight
    budget = (_ram(model, train_last=1) + _ram(model)) // 2
    best = codegen.inspect(model, ram_budget=budget).schemes[0]
    expect_error(tmp_path, ["generate", model, *out, "--ram-budget", budget],  # full training does not fit
                 f"--auto-sparse: {best.ram_bytes:,} B (fits)")
    expect_error(tmp_path, ["generate", model, *out, "--ram-budget", 10**6, "--auto-sparse", "--train-last", 1],
                 "--auto-sparse chooses the trainable set itself: drop --train-last")
    expect_error(tmp_path, ["generate", model, *out, "--ram-budget", 10**6, "--auto-sparse", "--train-channels",
                            "head.*:0.5"], "drop --train-channels")
    expect_error(tmp_path, ["generate", model, *out, "--auto-sparse"], "--auto-sparse needs --ram-budget")
    expect_error(tmp_path, ["generate", model, *out, "--ram-budget", 10**6, "--auto-sparse", "--freeze", "nope*"],
                 "pattern 'nope*' matches no parameter")
    expect_error(tmp_path, ["inspect", model, "--calibration", tmp_path / "c.npz"], "add --ram-budget")
    np.savez(tmp_path / "x_only.npz", x=np.zeros((8, 3, 8, 8), np.float32))
    expect_error(tmp_path, ["inspect", model, "--ram-budget", 10**6, "--calibration", tmp_path / "x_only.npz"],
                 "no 'y'")
