"""Stage 1: load and validate an ONNX file, pin the batch, fold constant chains -> IR Graph."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference, version_converter
from onnx.reference import ReferenceEvaluator

from . import ops
from .errors import ModelError, ShapeError, UnsupportedError
from .ir import ACT, CONST, FROZEN, INPUT, PARAM, Graph, Node, Tensor

# Every model is brought to at least this opset; the ops' semantics are implemented from it on.
TARGET_OPSET = 18


def load(path: str | Path, batch: int | None = None) -> Graph:
    """Read `path` into the IR: fixed shapes everywhere, constant chains folded, parameters marked."""
    model = upgraded(Path(path))
    _pin_inputs(model, batch)
    return _to_ir(*_fold_constants(model))


def _read(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ModelError(f"model file '{path}' not found")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises a variety of decode errors
        raise ModelError(f"'{path}' is not a readable ONNX model ({type(e).__name__}: {e})") from None
    if not model.graph.node:
        raise ModelError(f"'{path}' is not an ONNX model with a graph (no nodes found)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"'{path}' is not a valid ONNX model: {str(e).splitlines()[0]}") from None
    return model


def upgraded(path: Path) -> onnx.ModelProto:
    """The validated model at TARGET_OPSET or later, local functions inlined."""
    model = _read(path)
    _check_parameter_dtypes(model)
    model = _upgrade(model)
    return onnx.inliner.inline_local_functions(model) if model.functions else model


def _check_parameter_dtypes(model: onnx.ModelProto) -> None:
    for init in model.graph.initializer:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        if dtype.kind == "f" and dtype != np.float32:
            raise UnsupportedError(
                f"initializer '{init.name}' has dtype {dtype}; only float32 parameters are "
                "supported (convert the model to float32, e.g. model.float(), before exporting)")


def has_dynamic_batch(model: onnx.ModelProto) -> bool:
    inits = _initializer_names(model)
    return any(not i.type.tensor_type.shape.dim[0].HasField("dim_value")
               for i in model.graph.input if i.name not in inits and i.type.tensor_type.shape.dim)


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _upgrade(model: onnx.ModelProto) -> onnx.ModelProto:
    opset = default_opset(model)
    if opset >= TARGET_OPSET:
        return model
    try:
        return version_converter.convert_version(model, TARGET_OPSET)
    except Exception as e:
        raise UnsupportedError(
            f"the model uses opset {opset} and onnx's version converter cannot upgrade it to opset "
            f"{TARGET_OPSET} ({str(e).splitlines()[0]}). Re-export it with opset >= {TARGET_OPSET}."
        ) from None


def _initializer_names(model) -> set[str]:
    return {i.name for i in model.graph.initializer}


def _pin_inputs(model: onnx.ModelProto, batch: int | None) -> None:
    """Give every model input a fixed shape: the batch dim from --batch, the rest must be fixed."""
    inits = _initializer_names(model)
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        if tt.elem_type != onnx.TensorProto.FLOAT:
            raise UnsupportedError(
                f"model input '{inp.name}' has dtype {onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)}; "
                "only float32 inputs are supported")
        if not tt.HasField("shape"):
            raise ShapeError(f"model input '{inp.name}' has no shape; re-export with a fixed input shape")
        for axis, dim in enumerate(tt.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                if axis == 0 and batch is not None and dim.dim_value != batch:
                    raise ShapeError(
                        f"model input '{inp.name}' has a fixed batch size of {dim.dim_value}, but "
                        f"--batch {batch} was given; export the model with a dynamic batch dim "
                        "(dynamic_shapes / dynamic_axes) to choose the batch here")
                continue
            label = dim.dim_param or "?"
            if axis == 0 and batch is not None:
                dim.Clear()
                dim.dim_value = batch
            elif axis == 0:
                raise ShapeError(
                    f"model input '{inp.name}' has a dynamic batch dimension '{label}'; "
                    "pin it with --batch N (batch=N in Python)")
            else:
                raise ShapeError(
                    f"model input '{inp.name}' has a dynamic dimension '{label}' at axis {axis}; "
                    "only the batch dim (axis 0) can be pinned: re-export with a fixed shape")
    # Stale symbolic shapes of outputs/intermediates would fight the pinned ones: infer them anew.
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as e:
        raise ShapeError(f"shape inference failed: {str(e).splitlines()[0]}") from None


def _fold_constants(model: onnx.ModelProto):
    """Evaluate, at compile time, every node whose inputs are all known: Constant nodes, chains
    over integer initializers, and Shape of a fixed-shape tensor. Shape inference runs again
    after each round, since folded values (e.g. a computed Pad or Reshape shape) fix more shapes.
    Float initializers are parameters and are never folded into constants."""
    known: dict[str, np.ndarray] = {}
    params: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        value = _array(init)
        (params if value.dtype.kind == "f" else known)[init.name] = value
    while True:
        model = _infer(model)
        shapes = _shapes(model)
        kept = [node for node in model.graph.node if not _fold(node, known, shapes)]
        if len(kept) == len(model.graph.node):
            return model, kept, known, params, shapes
        inits = {i.name for i in model.graph.initializer}
        del model.graph.node[:]
        model.graph.node.extend(kept)
        model.graph.initializer.extend(numpy_helper.from_array(v, n) for n, v in known.items() if n not in inits)


def _array(init: onnx.TensorProto) -> np.ndarray:
    """An initializer's value; its data must match its declared shape (the checker does not look)."""
    try:
        return numpy_helper.to_array(init)
    except Exception as e:
        raise ModelError(f"initializer '{init.name}' is corrupt: its data does not match its shape "
                         f"{list(init.dims)} ({type(e).__name__}: {e})") from None


def _fold(node, known: dict, shapes: dict) -> bool:
    """Evaluate `node` into `known` if its inputs are all known; True if it was folded."""
    if node.domain not in ("", "ai.onnx") or not _foldable(node, known, shapes):
        return False
    feeds = {i: known[i] if i in known else np.zeros(shapes[i], np.float32) for i in node.input if i}
    try:
        results = ReferenceEvaluator(node).run(None, feeds)
    except Exception as e:
        raise ModelError(f"node '{node.name}' ({node.op_type}): cannot evaluate constant "
                         f"inputs ({type(e).__name__}: {e})") from None
    known.update({o: np.asarray(r) for o, r in zip(node.output, results) if o})
    return True


def _foldable(node, known, shapes) -> bool:
    if node.op_type == "Shape":
        return node.input[0] in shapes
    return all(i in known for i in node.input if i)


def _shapes(model) -> dict[str, tuple[int, ...]]:
    """Static shapes that inference found; symbolic/unknown dims leave the tensor out."""
    found = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            found[vi.name] = tuple(d.dim_value for d in tt.shape.dim)
    return found


def _dtype(model, name) -> str:
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if vi.name == name:
            return str(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
    return "float32"


def _to_ir(model, kept, known, params, shapes) -> Graph:
    inits = _initializer_names(model)
    tensors: dict[str, Tensor] = {}
    nodes = [Node(n.op_type, list(n.input), list(n.output),
                  {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute},
                  n.name, n.domain if n.domain != "ai.onnx" else "") for n in kept]
    for node in nodes:
        ops.lookup(node)  # unsupported ops fail here, before anything else
    used = {i for n in nodes for i in n.inputs if i}
    outputs = [o.name for o in model.graph.output]
    for name in [*params, *known]:  # initializer order: it becomes the parameter blob's order
        if name not in used and name not in outputs:
            continue
        if name in known:
            tensors[name] = Tensor(name, known[name].shape, str(known[name].dtype), CONST, known[name])
        elif name in params:
            tensors[name] = Tensor(name, params[name].shape, str(params[name].dtype), FROZEN, params[name])
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    for node in nodes:
        for name in node.outputs:
            if name and name not in tensors:
                if name not in shapes:
                    raise ShapeError(
                        f"{node.describe()}: the shape of output '{name}' is not static after "
                        "pinning the inputs; re-export the model with fixed shapes")
                tensors[name] = Tensor(name, shapes[name], _dtype(model, name), ACT)
    for name in inputs:
        tensors[name] = Tensor(name, shapes[name], "float32", INPUT)
    _check_sizes(tensors)
    graph = Graph(tensors, nodes, inputs, outputs, default_opset(model))
    _mark_parameters(graph)
    for node in nodes:
        op = ops.lookup(node)
        if op.check:
            op.check(node, graph)
    return graph


# The kernels count elements in C int; 2**28 float32 (1 GiB) is also far beyond any target's RAM.
MAX_ELEMENTS = 2**28


def _check_sizes(tensors: dict[str, Tensor]) -> None:
    for t in tensors.values():
        if int(np.prod(t.shape, dtype=object)) > MAX_ELEMENTS:
            raise ShapeError(f"tensor '{t.name}' of shape {list(t.shape)} has more than {MAX_ELEMENTS:,} "
                             "elements; use a smaller model or --batch")


def _mark_parameters(graph: Graph) -> None:
    """Parameters are the float initializers that feed a slot gradients can flow into; others
    (e.g. BatchNorm running statistics, scalars) stay constants."""
    for node in graph.nodes:
        op = ops.lookup(node)
        for slot in op.diff_inputs:
            t = graph.tensors.get(node.inputs[slot]) if slot < len(node.inputs) else None
            if t is not None and t.role == FROZEN and t.value is not None and t.value.ndim > 0:
                t.role = PARAM
    for t in graph.tensors.values():
        if t.role == FROZEN:
            t.role = CONST
