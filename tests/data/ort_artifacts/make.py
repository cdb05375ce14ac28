"""Writes this folder's tiny ONNX Runtime training artifacts (test data for test_ort_fuzz.py, so
that test needs no onnxruntime-training). Run once, from the repository root, in the shared venv
(benchmarks/ort_env.py prints its interpreter):
    "$(python -m benchmarks.ort_env 2>&1)" tests/data/ort_artifacts/make.py"""
import io
from pathlib import Path

import onnx
import torch
from onnxruntime.training import artifacts

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Linear-ReLU-Linear, one parameter frozen so the checkpoint has both tensor lists; MSE and
    AdamW, whose graphs and attributes give the importer the most to read."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(2, 4),), buf, input_names=["x"], output_names=["logits"], dynamo=False,
                      opset_version=17, do_constant_folding=False, training=torch.onnx.TrainingMode.TRAINING)
    proto = onnx.load_from_string(buf.getvalue())
    artifacts.generate_artifacts(proto, requires_grad=["0.weight", "0.bias", "2.weight"], frozen_params=["2.bias"],
                                 loss=artifacts.LossType.MSELoss, optimizer=artifacts.OptimType.AdamW,
                                 artifact_directory=str(HERE))


if __name__ == "__main__":
    main()
