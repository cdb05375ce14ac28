"""Run inside the ORT virtual environment (it needs torch there): turn a forward ONNX model into
onnxruntime-training artifacts (training graph, SGD optimizer graph, checkpoint).
Usage: python ort_artifacts.py MODEL.onnx LOSS OUT_DIR"""
import os
import sys

import onnx
from onnxruntime.training import artifacts

LOSSES = {"mse": artifacts.LossType.MSELoss, "cross_entropy": artifacts.LossType.CrossEntropyLoss}


def main(model_path: str, loss: str, out_dir: str) -> None:
    model = onnx.load(model_path)
    os.makedirs(out_dir, exist_ok=True)
    artifacts.generate_artifacts(model, requires_grad=[i.name for i in model.graph.initializer],
                                 loss=LOSSES[loss], optimizer=artifacts.OptimType.SGD,
                                 artifact_directory=out_dir)


if __name__ == "__main__":
    main(*sys.argv[1:])
