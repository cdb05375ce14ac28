"""Op registry. Each module in this package defines one op: how to check it, how to emit its C
kernel call, and its gradient rule. Importing the package registers them all, so adding an op
means adding its module (plus its kernel in runtime_c/kernels and its test)."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

from ..errors import ShapeError, UnsupportedError
from ..ir import CONST, TRAIN_DOMAIN, Node


@dataclass(frozen=True)
class OpDef:
    name: str
    kernel: str | None  # header in runtime_c/kernels/ (None for views, which emit no code)
    emit: Callable | None  # (node, EmitContext) -> C statement(s)
    grad: Callable | None = None  # (node, GradContext) -> None; None: no gradient flows through
    diff_inputs: tuple[int, ...] = (0,)  # input slots a gradient can flow into
    view: bool = False  # output 0 is input 0 reinterpreted: same bytes, no code
    check: Callable | None = None  # (node, Graph) -> None; raises UnsupportedError
    domain: str = ""
    bias_inputs: tuple[int, ...] = ()  # slots whose 1-D parameter is a bias (--train-bias-only)
    # elementwise: output may overwrite an input of the same size (a function (node, graph) -> bool:
    # only for some nodes of the op)
    inplace: bool | Callable = False
    int8: bool = False  # reads int8 data (QOperator ops, MaxPool, DequantizeLinear); others read float
    # Ops onnx's shape inference does not know (onnxruntime's com.microsoft ops): (node, [input
    # shapes], [input numpy dtypes]) -> (output shape, numpy dtype), an absent input's as None.
    shape: Callable | None = None
    # (node, c, scale, keep) -> C computing out = keep * out + scale * result: lets a parameter's
    # gradient be applied as an SGD update directly (scale = -lr, keep = 1 - lr * weight_decay).
    emit_update: Callable | None = None
    # Optimizer ops (inputs: target, gradient, ...): (node) -> the tensor the gradient's producer
    # may accumulate into instead of writing the gradient (the parameter, a momentum buffer, a
    # gradient sum), or None; and
    # (node, c) -> (scale, keep, C for the rest of the update, or None) when that happens.
    fuse_into: Callable | None = None
    emit_fused: Callable | None = None
    # (node, graph, train: bool) -> None: switches the node to its training-mode form (batch
    # statistics, active dropout) when train (generate --mode train) or when the node asks for it.
    training: Callable | None = None
    # (node, c) -> C of the node in predict when it differs from the training forward (a
    # training-mode BatchNorm normalises with its running statistics there, a Dropout passes).
    emit_predict: Callable | None = None


@dataclass(frozen=True)
class LossDef:
    name: str  # the --loss value
    op: str  # training op computing the loss; f"{op}Grad" gives d loss / d prediction
    label_dtype: str  # "float32" or "int32"
    label_shape: Callable  # prediction shape -> label shape; raises ValueError if unsuitable


@dataclass(frozen=True)
class OptimizerDef:
    name: str  # the --optimizer value
    op: str  # training op applying the update to one parameter: inputs (W, dW, *state)
    hyperparameters: tuple[str, ...]  # the fields of training.Optimizer it reads (besides lr)
    state: Callable  # (training.Optimizer) -> names of the per-parameter state tensors it keeps
    attrs: Callable  # (training.Optimizer) -> the op's attributes (lr is added)


REGISTRY: dict[tuple[str, str], OpDef] = {}
LOSSES: dict[str, LossDef] = {}
OPTIMIZERS: dict[str, OptimizerDef] = {}


def register(name: str, **kwargs) -> OpDef:
    op = OpDef(name=name, **kwargs)
    REGISTRY[(op.domain, name)] = op
    return op


def register_train_op(name: str, **kwargs) -> OpDef:
    """A training-only op (gradient, loss, optimizer): lives in the ai.mcutrain domain."""
    return register(name, domain=TRAIN_DOMAIN, **kwargs)


def register_optimizer(name: str, op: str, hyperparameters: tuple[str, ...], state, attrs) -> None:
    OPTIMIZERS[name] = OptimizerDef(name, op, hyperparameters, state, attrs)


def supported_ops() -> list[str]:
    return sorted(name for domain, name in REGISTRY if domain == "")


def lookup(node: Node) -> OpDef:
    op = REGISTRY.get((node.domain, node.op))
    if op is None:
        where = f" in domain '{node.domain}'" if node.domain else ""
        raise UnsupportedError(
            f"{node.describe()}: op '{node.op}'{where} is not supported. "
            f"Supported ops: {', '.join(supported_ops())}."
        )
    return op


def check_supported(nodes: list[Node]) -> None:
    """One UnsupportedError naming every node whose op is missing, so a user sees the whole list."""
    missing = [n for n in nodes if (n.domain, n.op) not in REGISTRY]
    if len(missing) == 1:
        lookup(missing[0])
    if missing:
        ops = sorted({f"{n.op}" + (f" (domain '{n.domain}')" if n.domain else "") for n in missing})
        nodes_text = ", ".join(n.describe() for n in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise UnsupportedError(f"{len(missing)} nodes use unsupported ops: {', '.join(ops)} ({nodes_text}). "
                               f"Supported ops: {', '.join(supported_ops())}.")


def check_dtypes(node: Node, graph) -> None:
    """Float ops read float data: an int8 tensor (of a QOperator-form model) reaches only int8 ops
    and views."""
    op = lookup(node)
    data = [graph.tensors[i] for i in node.inputs if i and graph.tensors[i].role != CONST]
    bad = [t.name for t in data if t.dtype == "int8"] if not (op.int8 or op.view) else []
    if bad:
        raise UnsupportedError(f"{node.describe()}: input '{bad[0]}' is int8, and {node.op} runs on float32 here; "
                               "put a DequantizeLinear before it (or give the model in QDQ form)")


def view_roots(nodes: list[Node]) -> dict[str, str]:
    """Map each output of a view op to the tensor whose bytes it shares (through view chains)."""
    root: dict[str, str] = {}
    for node in nodes:
        if lookup(node).view:
            src = node.inputs[0]
            root[node.outputs[0]] = root.get(src, src)
    return root


def attr(node: Node, key: str, default=None):
    return node.attrs.get(key, default)


def refuse(node: Node, what: str) -> UnsupportedError:
    return UnsupportedError(f"{node.describe()}: {what} is not supported.")


def invalid(node: Node, what: str) -> ShapeError:
    """Shapes the ONNX spec forbids but onnx's shape inference lets through (onnxruntime refuses them)."""
    return ShapeError(f"{node.describe()}: {what}, which the ONNX spec does not allow; fix the model and export it again")


for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
