"""`mcutrain export | delta | aggregate | import-ort`: the trained model's way out of the device,
and ONNX Runtime training artifacts as a way in.
Thin like cli.py: parse options, call export/blob/federated, print; errors exit 2."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import blob, export, federated, ort_import, training
from .console import call, note, print_memory, say
from .manifest import Manifest, read as read_manifest
from .errors import DataError, OptionError
from .files import write_atomic

BUILD_HELP = "folder written by `mcutrain generate`"
PARAMS_HELP = "parameter blob (MTPB) or .npz of name -> array (`train --save`, `run --save`)"


def _weights(build_dir: Path, path: Optional[Path], manifest: Manifest):
    """Weights from `path` (default: as generated), refused when any is NaN/Inf: it would spread
    into every delta and global model computed from them."""
    if path is None:
        return export.initial_params(build_dir, manifest)
    params = blob.read_params(path, manifest)
    federated.check_finite(params, f"'{path}'")
    return params


def _message(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"delta file '{path}' not found")
    return path.read_bytes()


def _export(build_dir: Path, params: Path, dest: Path) -> None:
    manifest = read_manifest(build_dir)
    export.export_onnx(build_dir, blob.read_params(params, manifest), dest)
    note(f"wrote {dest}: {Path(build_dir) / export.SOURCE_MODEL} (the model generate compiled from "
         f"{manifest.source}) with the weights of {params}")


def _delta(build_dir: Path, params: Path, base: Optional[Path], samples: int, int8: bool, dest: Path) -> None:
    if not 1 <= samples <= blob.MAX_SAMPLES:
        raise OptionError(f"--samples must be between 1 and {blob.MAX_SAMPLES:,} (the sample count weights "
                          f"the average; the message stores it as a uint32), got {samples:,}")
    manifest = read_manifest(build_dir)
    change = federated.delta(_weights(build_dir, params, manifest), _weights(build_dir, base, manifest))
    data = blob.encode_delta(change, samples, manifest, int8)
    write_atomic(dest, data)
    note(f"wrote {dest}: {blob.KIND[blob.delta_kind(manifest, int8)]}, {samples} samples, {len(data):,} bytes")


def _aggregate(build_dir: Path, deltas: list[Path], base: Optional[Path], max_norm: Optional[float],
               dest: Path) -> None:
    """Every delta and the global model pass federated.validate / check_finite before anything is
    written: the first bad input refuses the whole run."""
    if max_norm is not None and not max_norm > 0:
        raise OptionError(f"--max-norm must be a positive number, got {max_norm}")
    manifest = read_manifest(build_dir)
    seen: dict[bytes, str] = {}
    checked = [federated.validate(_message(p), manifest, f"delta '{p}'", max_norm, seen) for p in deltas]
    blob.write_params(dest, federated.fedavg(_weights(build_dir, base, manifest), checked), manifest)
    counts = ", ".join(str(n) for _, n in checked)
    note(f"wrote {dest}: FedAvg of {len(deltas)} deltas ({sum(n for _, n in checked):,} samples: {counts})")


def _import_ort(artifacts: Path, dest: Path, lr: float, batch: Optional[int], name: Optional[str]) -> None:
    summary = ort_import.generate_from_artifacts(artifacts, dest, lr=lr, batch=batch, name=name or "model")
    opt = summary["optimizer"]
    say(f"wrote {dest}/{summary['name']}.h, .c, ...: loss {summary['loss']}, optimizer {opt['kind']} "
        f"(lr {opt['lr']}, weight decay {opt['weight_decay']}), trainable: "
        + ", ".join(p["name"] for p in summary["params"]))
    print_memory(summary)


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        build_dir: Path = typer.Argument(..., help=BUILD_HELP),
        params: Path = typer.Option(..., metavar="FILE", help=PARAMS_HELP),
        dest: Path = typer.Option(..., "-o", "--out", metavar="FILE", help="inference ONNX model to write"),
    ):
        """The source ONNX model with trained weights, for onnxruntime or any ONNX runtime."""
        call(_export, build_dir, params, dest)

    @app.command()
    def delta(
        build_dir: Path = typer.Argument(..., help=BUILD_HELP),
        params: Path = typer.Option(..., metavar="FILE", help="the client's trained weights: " + PARAMS_HELP),
        base: Optional[Path] = typer.Option(None, metavar="FILE",
                                            help="the round's global weights (default: as generated)"),
        samples: int = typer.Option(..., metavar="N", help="samples trained on this round (FedAvg weight)"),
        int8: bool = typer.Option(False, "--int8", help="int8 with a per-tensor scale (~4x smaller)"),
        dest: Path = typer.Option(..., "-o", "--out", metavar="FILE",
                                  help="delta message to write (same bytes as the device's)"),
    ):
        """A federated delta (trained - base) as the device's fl_delta writes it."""
        call(_delta, build_dir, params, base, samples, int8, dest)

    @app.command()
    def aggregate(
        build_dir: Path = typer.Argument(..., help=BUILD_HELP),
        deltas: list[Path] = typer.Argument(..., help="delta messages (device's fl_delta or `mcutrain delta`)"),
        base: Optional[Path] = typer.Option(None, "--global", metavar="FILE",
                                            help="this round's global weights (default: as generated)"),
        max_norm: Optional[float] = typer.Option(None, "--max-norm", metavar="NORM",
                                                 help="refuse a delta whose L2 norm over all tensors exceeds this"),
        dest: Path = typer.Option(..., "-o", "--out", metavar="FILE",
                                  help="new global model: .npz, else a parameter blob"),
    ):
        """FedAvg: global + sum(samples_k * delta_k) / sum(samples_k). Refuses the run, writing
        nothing, on the first malformed, non-finite, duplicate or (--max-norm) too large delta."""
        call(_aggregate, build_dir, deltas, base, max_norm, dest)

    @app.command("import-ort")
    def import_ort(
        artifacts: Path = typer.Argument(..., help="folder of generate_artifacts: training_model.onnx, "
                                         "optimizer_model.onnx, checkpoint"),
        dest: Path = typer.Option(..., "-o", "--out", metavar="DIR",
                                  help="output folder (as `mcutrain generate -o`)"),
        lr: float = typer.Option(training.Optimizer.lr,
                                 help="learning rate (ORT sets it at run time, not in the artifacts)"),
        batch: Optional[int] = typer.Option(None, metavar="N", help="pin a dynamic batch dimension"),
        name: Optional[str] = typer.Option(None, metavar="PREFIX", help="C prefix (default: model)"),
    ):
        """Compile ONNX Runtime training artifacts: their forward graph, loss, optimizer, weights."""
        call(_import_ort, artifacts, dest, lr, batch, name)
