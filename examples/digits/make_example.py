"""Regenerate the bundled example files: digits.npz (scikit-learn's 8x8 digits, 1797 samples,
pixels scaled to [0, 1]) and mlp.onnx (an untrained 64-32-10 MLP, PyTorch-style init, dynamic
batch). Needs the `examples` extra (scikit-learn)."""
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).parent


def linear(rng, fan_in, fan_out, name):
    bound = 1 / np.sqrt(fan_in)  # torch.nn.Linear's default init
    return [numpy_helper.from_array(rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32), f"{name}.weight"),
            numpy_helper.from_array(rng.uniform(-bound, bound, fan_out).astype(np.float32), f"{name}.bias")]


def main():
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez_compressed(HERE / "digits.npz", x=(digits.data / 16).astype(np.float32), y=digits.target.astype(np.int64))
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("Gemm", ["a", "fc2.weight", "fc2.bias"], ["logits"], transB=1, name="fc2")]
    graph = helper.make_graph(nodes, "digits_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
                              linear(rng, 64, 32, "fc1") + linear(rng, 32, 10, "fc2"))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, str(HERE / "mlp.onnx"))


if __name__ == "__main__":
    main()
