"""The training graph as an ONNX model (training_model.onnx): what the C was lowered from.
Gradient, loss and optimizer ops are in the ai.mcutrain domain; parameters are initializers."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .ir import BIT, CONST, FROZEN, INPUT, LABEL, PARAM, RUNNING, STATE, TRAIN_DOMAIN
from .training import UPDATED, TrainingGraph


def _elem_type(dtype: str) -> int:
    """ONNX's element type; a 1-bit mask is declared bool (the packing is the C's business)."""
    return onnx.TensorProto.BOOL if dtype == BIT else helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def to_onnx(tg: TrainingGraph, opset: int) -> onnx.ModelProto:
    graph = tg.graph
    info = lambda t: helper.make_tensor_value_info(t.name, _elem_type(t.dtype), list(t.shape))  # noqa: E731
    used = {i for n in graph.nodes for i in n.inputs if i}
    inits = [numpy_helper.from_array(np.asarray(t.value), t.name) for t in graph.tensors.values()
             if t.role in (PARAM, FROZEN, CONST, STATE, RUNNING) and t.name in used]
    inputs = [info(graph.tensors[n]) for n in graph.inputs] + [info(graph.tensors[tg.label])]
    outputs = [info(graph.tensors[n]) for n in (tg.loss, tg.output)]
    outputs += [info(t) for t in graph.tensors.values() if t.role == UPDATED]
    skip = {INPUT, LABEL, PARAM, FROZEN, CONST, STATE, RUNNING, UPDATED}
    value_info = [info(t) for t in graph.tensors.values()
                  if t.role not in skip and t.name not in (tg.loss, tg.output)]
    nodes = [helper.make_node(n.op, n.inputs, n.outputs, name=n.name, domain=n.domain, **n.attrs)
             for n in graph.nodes]
    g = helper.make_graph(nodes, "training", inputs, outputs, inits, value_info=value_info)
    domains = sorted({n.domain for n in graph.nodes} - {"", TRAIN_DOMAIN})  # com.microsoft's int8 ops
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(TRAIN_DOMAIN, 1),
                                                *(helper.make_opsetid(d, 1) for d in domains)],
                              producer_name="mcutrain")
    onnx.checker.check_model(model)
    return model
