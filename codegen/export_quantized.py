"""Trained parameters back into a quantized (QDQ) source model, in the form that makes onnxruntime
compute what the C computes. There a parameter is the output of a DequantizeLinear of a constant
(codegen/quantized.py, recognize), named as its float tensor.

- The bias of a layer with a frozen int8 weight and an int8 input: the C adds the int32 bias
  rintf(b / S), S = float32(x_scale * w_scale[c]), saturated at +-BIAS_LIMIT (mt_quantize_bias). Those integers
  replace the bias's int32 constant when its scale is S and its zero point 0 (as onnxruntime and
  `--calibration` write it), so onnxruntime adds the same integers and still runs the layer in int8.
- Anything else (a trained weight, the bias of a layer whose weight trains, a bias stored at another
  scale): a float initializer in place of its DequantizeLinear; the layer then runs in float between
  its activations' Q/DQ, as it does in the C.
- An integer parameter (generate --update int8: an int8 weight, an int32 bias at scale S): its
  integers replace the constant its DequantizeLinear reads (uint8 shifted back by +128), so
  onnxruntime runs the personalized layer in int8 on the trained integers, as the C does.
Scales and zero points never change; those only a replaced DequantizeLinear read are dropped."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .ops._qlinear import BIAS_LIMIT
from .quantized import float_name

BIASED = ("Conv", "Gemm")  # the layers whose input 2 the int8 kernels add as an int32 bias


def write_back(graph: onnx.GraphProto, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Put the parameters that are dequantized constants of `graph` into it; returns the others."""
    inits = {i.name: i for i in graph.initializer}
    dequantized = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    taken = {*inits, *(o for n in graph.node for o in n.output), *(i.name for i in graph.input)}
    found = {name: dq for dq in dequantized.values()
             if (name := float_name(dq.input[0], dq.output[0], taken)) in params}
    trained = {id(dq) for dq in found.values()}
    for name, dq in found.items():
        value = np.asarray(params[name])
        if value.dtype.kind == "i":
            _integers(inits[dq.input[0]], value)
        elif not _int32_bias(graph, inits, dq, value.astype(np.float32), trained):
            _to_float(graph, dq, name, value.astype(np.float32))
    return {p: v for p, v in params.items() if p not in found}


def _int32_bias(graph, inits, dq, value: np.ndarray, trained: set[int]) -> bool:
    """Store `value` as the int32 bias the C's int8 layer adds; False where that layer is not one."""
    producer = {o: n for n in graph.node for o in n.output}
    readers = [n for n in graph.node if dq.output[0] in n.input]
    if len(readers) != 1 or readers[0].op_type not in BIASED or list(readers[0].input[2:3]) != [dq.output[0]]:
        return False
    x, w = (producer.get(i) for i in readers[0].input[:2])
    if any(n is None or n.op_type != "DequantizeLinear" for n in (x, w)) \
            or x.input[0] in inits or w.input[0] not in inits or id(w) in trained:
        return False
    q, scale, x_scale, w_scale = (numpy_helper.to_array(inits[i]) for i in (*dq.input[:2], x.input[1], w.input[1]))
    zero = numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] else 0
    s = np.broadcast_to(x_scale * w_scale, value.shape).astype(np.float32)
    if q.dtype != np.int32 or np.any(zero) or not np.array_equal(np.broadcast_to(scale, value.shape), s):
        return False
    rounded = np.nan_to_num(np.rint(value / s), nan=-BIAS_LIMIT)  # float32, as rintf(B[i] / S[i]); NaN: -limit
    ints = np.clip(rounded, -BIAS_LIMIT, BIAS_LIMIT).astype(np.int32)
    inits[dq.input[0]].CopyFrom(numpy_helper.from_array(ints.reshape(q.shape), dq.input[0]))
    return True


def _integers(init, value: np.ndarray) -> None:
    """The trained integers in place of the stored ones (same type; uint8 as the int8 + 128 the
    compiler made of it)."""
    stored = numpy_helper.to_array(init)
    ints = value.astype(np.int16) + 128 if stored.dtype == np.uint8 else value
    init.CopyFrom(numpy_helper.from_array(ints.astype(stored.dtype).reshape(stored.shape), init.name))


def _to_float(graph, dq, name: str, value: np.ndarray) -> None:
    """Replace the DequantizeLinear by the float initializer `name`; drop what only it read."""
    graph.node.remove(dq)
    for node in graph.node:
        node.input[:] = [name if i == dq.output[0] else i for i in node.input]
    for info in [v for v in graph.value_info if v.name == dq.output[0]]:
        graph.value_info.remove(info)
    read = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name in dq.input and i.name not in read]:
        graph.initializer.remove(init)
    graph.initializer.append(numpy_helper.from_array(value, name))
