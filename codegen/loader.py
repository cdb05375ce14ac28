"""Stage 1: load and validate an ONNX file, pin the batch, fold constant chains -> IR Graph."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
from onnx import inliner, numpy_helper, shape_inference, version_converter
from onnx.reference import ReferenceEvaluator

from . import ops, quantized
from .errors import ModelError, ShapeError, UnsupportedError
from .ir import ACT, CONST, FROZEN, INPUT, PARAM, Graph, Node, Tensor

# Every model is brought to at least this opset; the ops' semantics are implemented from it on.
TARGET_OPSET = 18


def load(path: str | Path, batch: int | None = None) -> Graph:
    """Read `path` into the IR: fixed shapes everywhere, constant chains folded, parameters marked."""
    return to_ir(fold(upgraded(Path(path)), batch))


class Folded(NamedTuple):
    """A model with pinned inputs and its constant chains folded, before any op is judged."""
    model: onnx.ModelProto
    nodes: list  # the NodeProtos that remain to run
    known: dict[str, np.ndarray]  # constants (folded values, integer initializers)
    params: dict[str, np.ndarray]  # float initializers
    shapes: dict[str, tuple[int, ...]]


def fold(model: onnx.ModelProto, batch: int | None = None) -> Folded:
    """Pin the inputs of an upgraded() model (changing it) and fold its constant chains."""
    _pin_inputs(model, batch)
    return Folded(*_fold_constants(model))


def _why(e: Exception) -> str:
    """One line for an exception from onnx or protobuf: whatever its type, the user sees this line."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def read(path: Path) -> onnx.ModelProto:
    """An ONNX file that onnx's checker accepts and whose names are all text, or ModelError."""
    if not path.is_file():
        raise ModelError(f"model file '{path}' not found")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises a variety of decode errors
        raise ModelError(f"'{path}' is not a readable ONNX model ({_why(e)})") from None
    if not model.graph.node:
        raise ModelError(f"'{path}' is not an ONNX model with a graph (no nodes found)")
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # ValidationError, but also e.g. UnicodeDecodeError on a corrupt name
        raise ModelError(f"'{path}' is not a valid ONNX model ({_why(e)}); re-export it") from None
    _check_names(model, path)
    return model


def upgraded(path: Path) -> onnx.ModelProto:
    """The validated model at TARGET_OPSET or later, local functions inlined."""
    model = read(path)
    _check_opset(model)
    _check_outputs(model)
    _check_parameter_dtypes(model)
    model = _upgrade(model)
    if not model.functions:
        return model
    try:
        return inliner.inline_local_functions(model)
    except Exception as e:
        raise ModelError(f"the model's local functions cannot be inlined ({_why(e)}); re-export it "
                         "without them (e.g. torch.onnx.export(..., export_modules_as_functions=False))") from None


def _names(model: onnx.ModelProto):
    g = model.graph
    yield from (v.name for v in (*g.input, *g.output, *g.initializer))
    for node in (*g.node, *(n for f in model.functions for n in f.node)):
        yield from (node.name, node.op_type, node.domain, *node.input, *node.output, *(a.name for a in node.attribute))


def _check_names(model: onnx.ModelProto, path: Path) -> None:
    """protobuf hands over a name that is not valid UTF-8 as bytes, and the checker lets it pass
    where it never quotes it (a node's own name): a flipped byte."""
    bad = next((name for name in _names(model) if isinstance(name, bytes)), None)
    if bad is not None:
        raise ModelError(f"'{path}' holds a name that is not valid UTF-8 ({bad!r}); the file is corrupt: "
                         "export the model again")


def _check_opset(model: onnx.ModelProto) -> None:
    """The checker accepts any opset number; an opset newer than the installed onnx has op
    semantics (and shape inference) that nothing here knows."""
    opset, newest = default_opset(model), onnx.defs.onnx_opset_version()
    if opset > newest:
        raise UnsupportedError(
            f"the model imports opset {opset} of the default ONNX domain, but the installed onnx "
            f"{onnx.__version__} knows opsets up to {newest}: re-export the model with an opset from "
            f"{TARGET_OPSET} to {newest}, or upgrade onnx")


def _check_outputs(model: onnx.ModelProto) -> None:
    """Each model output must be computed by a node: the trainer's output is an activation."""
    computed = {o for n in model.graph.node for o in n.output}
    for out in model.graph.output:
        if out.name not in computed:
            raise ModelError(f"model output '{out.name}' is not computed by any node (it is a model input, "
                             "an initializer or undefined); list a node's output as the model output")


def _np_dtype(elem_type: int) -> np.dtype | None:
    """numpy's dtype for an ONNX element type; None for UNDEFINED and numbers no onnx defines."""
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    except KeyError:
        return None


def _dtype_name(elem_type: int) -> str:
    dtype = _np_dtype(elem_type)
    if dtype is not None:
        return str(dtype)
    return "UNDEFINED" if elem_type == onnx.TensorProto.UNDEFINED else f"unknown ({elem_type})"


def _check_parameter_dtypes(model: onnx.ModelProto) -> None:
    for init in model.graph.initializer:
        dtype = _np_dtype(init.data_type)
        if dtype is None:
            raise ModelError(f"initializer '{init.name}' has data type {_dtype_name(init.data_type)}; "
                             "re-export the model")
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
        model = version_converter.convert_version(model, TARGET_OPSET)
    except Exception as e:
        raise UnsupportedError(
            f"the model uses opset {opset} and onnx's version converter cannot upgrade it to opset "
            f"{TARGET_OPSET} ({_why(e)}). Re-export it with opset >= {TARGET_OPSET}."
        ) from None
    # The converter keeps the IR version: one before 4 wants every initializer listed as a graph
    # input, which initializers added later (folded values, quantization scales) are not.
    model.ir_version = max(model.ir_version, onnx.helper.find_min_ir_version_for(list(model.opset_import)))
    return model


def _initializer_names(model) -> set[str]:
    return {i.name for i in model.graph.initializer}


def _pin_inputs(model: onnx.ModelProto, batch: int | None) -> None:
    """Give every model input a fixed shape: the batch dim from --batch, the rest must be fixed."""
    inits = _initializer_names(model)
    for inp in model.graph.input:
        if inp.name not in inits:
            _check_input_type(inp, model)
            _pin_dims(inp, batch)
    # Stale symbolic shapes of outputs/intermediates would fight the pinned ones: infer them anew.
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")


def _check_input_type(inp: onnx.ValueInfoProto, model: onnx.ModelProto) -> None:
    kind = inp.type.WhichOneof("value")
    if kind != "tensor_type":
        raise UnsupportedError(f"model input '{inp.name}' is a {kind or 'value of no type'}, not a tensor; "
                               f"only float32 tensor inputs are supported{_readers(model, inp.name)}")
    tt = inp.type.tensor_type
    if tt.elem_type != onnx.TensorProto.FLOAT:
        raise UnsupportedError(f"model input '{inp.name}' has dtype {_dtype_name(tt.elem_type)}; "
                               f"only float32 inputs are supported{_readers(model, inp.name)}")
    if not tt.HasField("shape"):
        raise ShapeError(f"model input '{inp.name}' has no shape; re-export with a fixed input shape")


def _readers(model: onnx.ModelProto, name: str) -> str:
    """'; it is read by node 'a' (Op), ...': where a refused input goes, so the user finds the node
    (an integer input such as a GRU's sequence_lens or Gather's indices must be a constant)."""
    nodes = [f"node '{n.name}' ({n.op_type})" for n in model.graph.node if name in n.input]
    more = " ..." if len(nodes) > 3 else ""
    return f"; it is read by {', '.join(nodes[:3])}{more}: make it a constant of the model" if nodes else ""


def _pin_dims(inp: onnx.ValueInfoProto, batch: int | None) -> None:
    for axis, dim in enumerate(inp.type.tensor_type.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value < 1:
            raise ShapeError(f"model input '{inp.name}' has dimension {dim.dim_value} at axis {axis}; "
                             "re-export the model with positive dimensions (a named one for a dynamic batch)")
        if dim.HasField("dim_value"):
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


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx's shape inference, with the shape rules of ops it does not know (OpDef.shape) applied
    in between until every output it can reach has a shape."""
    while True:
        try:
            model = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        except Exception as e:
            raise ShapeError(f"shape inference failed ({_why(e)}); fix the shapes it names") from None
        if not _contrib_shapes(model):
            return model


def _contrib_shapes(model: onnx.ModelProto) -> bool:
    """Add value_info for the outputs of non-standard ops whose inputs have shapes; True if any."""
    types = {vi.name: vi.type.tensor_type for vi in (*model.graph.value_info, *model.graph.input, *model.graph.output)
             if vi.type.tensor_type.HasField("shape")}
    known = {i.name: (tuple(i.dims), _np_dtype(i.data_type)) for i in model.graph.initializer}
    known.update({n: (tuple(d.dim_value for d in t.shape.dim), _np_dtype(t.elem_type)) for n, t in types.items()
                  if all(d.HasField("dim_value") for d in t.shape.dim)})
    added = False
    for node in model.graph.node:
        op = ops.REGISTRY.get((node.domain, node.op_type)) if node.domain not in ("", "ai.onnx") else None
        if op is None or op.shape is None or node.output[0] in known or any(i and i not in known for i in node.input):
            continue
        ir_node = Node(node.op_type, list(node.input), list(node.output),
                       {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}, node.name, node.domain)
        shape, dtype = op.shape(ir_node, *zip(*(known.get(i, (None, None)) for i in node.input)))
        model.graph.value_info.append(onnx.helper.make_tensor_value_info(
            node.output[0], onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), list(shape)))
        added = True
    return added


def _fold_constants(model: onnx.ModelProto):
    """Evaluate, at compile time, every node whose inputs are all known: Constant nodes, chains
    over integer initializers, and Shape of a fixed-shape tensor (not QuantizeLinear and
    DequantizeLinear: codegen/quantized.py keeps a quantized weight's integer form). Shape inference runs again
    after each round, since folded values (e.g. a computed Pad or Reshape shape) fix more shapes.
    Float initializers are parameters and are never folded into constants; folded weights of
    layers become parameters too (_folded_weights)."""
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
            _folded_weights(kept, known, params)
            return model, kept, known, params, shapes
        del model.graph.node[:]
        model.graph.node.extend(kept)
        _publish(model, known)


def _publish(model: onnx.ModelProto, known: dict) -> None:
    """Put the folded values where the next shape inference sees them: integers as initializers
    (their values fix shapes), floats only as their exact type in value_info (their shapes are all
    it needs, and a model zoo's weights as initializers would be serialized at every round: minutes
    for VGG-19; a node folded in the round that computed its input had no shape inferred)."""
    inits = {i.name for i in model.graph.initializer}
    floats = {n: v for n, v in known.items() if v.dtype.kind == "f"}
    model.graph.initializer.extend(numpy_helper.from_array(v, n) for n, v in known.items()
                                   if n not in inits and n not in floats)
    infos = [vi for vi in model.graph.value_info if vi.name not in floats]
    infos += [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for n, v in floats.items()]
    del model.graph.value_info[:]
    model.graph.value_info.extend(infos)


# The weight and bias slots of the compute layers (../shared/DECISIONS.md section 1).
LAYER_WEIGHTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (0, 1),
                 "BatchNormalization": (1, 2), "LayerNormalization": (1, 2), "GRU": (1, 2, 3), "LSTM": (1, 2, 3)}


def _folded_weights(kept: list, known: dict, params: dict) -> None:
    """Move folded float32 tensors that feed a layer's weight or bias from `known` to `params`: a
    model whose weights are computed (the ONNX model-zoo "light" graphs make them with
    ConstantOfShape) has something to train. Other folded floats (scalars, shapes, a Constant
    feeding an Add) stay constants."""
    for node in kept:
        slots = LAYER_WEIGHTS.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ()
        for name in (node.input[k] for k in slots if k < len(node.input)):
            if name in known and known[name].dtype == np.float32 and known[name].ndim > 0:
                params[name] = known.pop(name)


def _array(init: onnx.TensorProto) -> np.ndarray:
    """An initializer's value; its data must match its declared shape (the checker does not look)."""
    try:
        return numpy_helper.to_array(init)
    except Exception as e:
        raise ModelError(f"initializer '{init.name}' is corrupt: its data does not match its shape "
                         f"{list(init.dims)} ({_why(e)})") from None


def _fold(node, known: dict, shapes: dict) -> bool:
    """Evaluate `node` into `known` if its inputs are all known; True if it was folded."""
    if node.domain not in ("", "ai.onnx") or node.op_type in quantized.QDQ or not _foldable(node, known, shapes):
        return False
    for out in node.output:  # before evaluating: a ConstantOfShape of 10**9 would allocate it
        if out in shapes and np.prod(shapes[out], dtype=object) > MAX_ELEMENTS:
            raise ShapeError(f"node '{node.name}' ({node.op_type}): folding it would make a constant "
                             f"'{out}' of shape {list(shapes[out])}, more than {MAX_ELEMENTS:,} elements")
    feeds = {i: known[i] if i in known else np.zeros(shapes[i], np.float32) for i in node.input if i}
    try:
        results = ReferenceEvaluator(node).run(None, feeds)
    except Exception as e:
        raise ModelError(f"node '{node.name}' ({node.op_type}): cannot evaluate constant "
                         f"inputs ({_why(e)})") from None
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


def _dtypes(model) -> dict[str, str]:
    """Each typed tensor's dtype name, the first listing winning (value_info, inputs, outputs)."""
    infos = [*model.graph.value_info, *model.graph.input, *model.graph.output]
    return {vi.name: _dtype_name(vi.type.tensor_type.elem_type) for vi in reversed(infos)}


def to_ir(folded: Folded) -> Graph:
    """The IR of a folded model: unsupported ops, invalid shapes and sizes refused here."""
    model, kept, known, params, shapes = folded
    inits = _initializer_names(model)
    tensors: dict[str, Tensor] = {}
    read = {i for n in kept for i in n.input} | {o.name for o in model.graph.output}
    nodes = [Node(n.op_type, list(n.input), _read_outputs(n, read),
                  {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute},
                  n.name, n.domain if n.domain != "ai.onnx" else "") for n in kept]
    ops.check_supported(nodes)  # every unsupported op in one message, before anything else
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
    dtypes = _dtypes(model)
    for node in nodes:
        for name in node.outputs:
            if name and name not in tensors:
                tensors[name] = Tensor(name, _output_shape(node, name, shapes), dtypes.get(name, "float32"), ACT)
    for name in inputs:
        tensors[name] = Tensor(name, shapes[name], "float32", INPUT)
    _check_sizes(tensors)
    graph = quantized.recognize(Graph(tensors, nodes, inputs, outputs, default_opset(model)))
    _mark_parameters(graph)
    for node in nodes:
        op = ops.lookup(node)
        ops.check_dtypes(node, graph)
        if op.check:
            op.check(node, graph)
    return graph


def _read_outputs(node, read: set[str]) -> list[str]:
    """The node's outputs, optional ones that nothing reads omitted ("" as in ONNX): a Dropout's
    mask or a MaxPool's Indices that no node uses need no support, no memory and no code."""
    return [node.output[0], *(o if o in read else "" for o in node.output[1:])]


def _output_shape(node: Node, name: str, shapes: dict) -> tuple[int, ...]:
    """The inferred shape of a node's output; onnx infers an empty or negative dim without complaint
    (a kernel larger than its input, a Pad cropping more than there is)."""
    if name not in shapes:
        raise ShapeError(f"{node.describe()}: the shape of output '{name}' is not static after "
                         "pinning the inputs; re-export the model with fixed shapes")
    if min(shapes[name], default=1) < 1:
        raise ShapeError(f"{node.describe()}: output '{name}' would have shape {list(shapes[name])}, with no "
                         "elements; check the node's input shapes and attributes (kernel, pads, target shape)")
    return shapes[name]


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
            if t is not None and t.role == FROZEN and t.value is not None and t.value.ndim > 0 \
                    and t.value.dtype == np.float32:
                t.role = PARAM
    for t in graph.tensors.values():
        if t.role == FROZEN:
            t.role = CONST
