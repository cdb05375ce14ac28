"""The C API of a generated trainer as one list: the header template declares these functions and
the host build gives the same declarations to cffi, so a new function is added here once
(../shared/DECISIONS.md §3)."""
from __future__ import annotations

from dataclasses import dataclass

from .ctext import Safe


@dataclass(frozen=True)
class Function:
    ret: str
    name: str  # after "<prefix>_"
    params: str  # "{inputs}" stands for one "const float *in_<name>, " per model input
    doc: str  # the header comment; {p} / {P} stand for the prefix in lower / upper case
    federated: bool = False  # only in builds with the round-start copy (generate --federated)


# <prefix>_last_status() codes: what the last train_step did.
STATUS = {0: "step applied", -1: "refused: an input value is NaN or infinite",
          -2: "refused: a label is NaN/infinite or a class index is out of range",
          -3: "refused: the loss is NaN or infinite (nothing was updated)"}
STATUS_NAMES = {0: "OK", -1: "BAD_INPUT", -2: "BAD_LABEL", -3: "BAD_LOSS"}

FUNCTIONS = (
    Function("float", "train_step", "{inputs}const {p}_label_t *labels", """\
One training step: forward, loss, backward, optimizer update, on {P}_ACCUMULATE consecutive
micro-batches (inputs {P}_ACCUMULATE x *_SIZE floats, labels {P}_ACCUMULATE x {P}_LABEL_SIZE) with one
update from their summed gradients. Returns the mean loss over them (computed before the update).
A step is refused with nothing changed (weights, optimizer state) when an input or label is not
finite or a class index is out of range (returns NAN) or when the loss is not finite (returns it);
{p}_last_status() tells which. Under generate --mode train the BatchNorm running statistics move in
the forward pass, as in PyTorch, so a step refused for its loss has moved them too (a channel whose
batch statistics are not finite keeps its own)."""),
    Function("int32_t", "last_status", "void", """\
What the last train_step did: {P}_STATUS_OK (0) if the step was applied, else a negative
{P}_STATUS_* code saying why it was refused."""),
    Function("void", "predict", "{inputs}float *out", "Forward pass only; writes {P}_OUTPUT_SIZE floats to out."),
    Function("void", "get_params", "float *dst",
             "The trainable parameters as one blob of {P}_PARAMS_SIZE floats (order: see above)."),
    Function("uint32_t", "get_params_slice", "float *dst, uint32_t offset, uint32_t count", """\
Up to count floats of that blob from float offset; returns how many were copied (fewer at the end).
Streams the weights in pieces (a radio packet, a print buffer) without a second copy in RAM."""),
    Function("void", "set_params", "const float *src", "Replace the trainable parameters (same layout)."),
    Function("void", "get_state", "float *dst", """\
The state training changes besides the weights: {P}_STATE_SIZE floats, the BatchNorm running statistics
of generate --mode train (order: see above; the state section of the parameter blob)."""),
    Function("void", "set_state", "const float *src", "Replace that state (same layout)."),
    Function("int32_t", "save_params", "uint8_t *dst, uint32_t capacity", """\
The parameter blob: the weights as a self-checking message for flash or the radio ({P}_BLOB_BYTES:
20-byte header (magic "MTPB", format version, tensor count, {P}_MODEL_HASH, payload length,
CRC-32) + the floats as little-endian float32, the weights then the state; layout in
runtime/kernels/blob.h). Returns the
bytes written, or -1 (MT_BLOB_ERR_SIZE) if capacity is too small."""),
    Function("int32_t", "load_params", "const uint8_t *src, uint32_t len", """\
Load a parameter blob: 0 on success, else a negative MT_BLOB_ERR_* code of runtime/kernels/blob.h
(-1 truncated, -2 magic, -3 version, -4 model hash, -5 tensor count, -6 length field, -7 CRC).
A refused load changes nothing."""),
    Function("void", "set_lr", "float lr", "Learning rate, read at every step."),
    Function("void", "set_seed", "uint32_t seed", """\
Restart the random stream of the training-mode Dropout masks and of the stochastic rounding of
generate --update int8 (xorshift32; the same draws from the same seed on every target). Seed 0 stands
for 1 (xorshift32's state is never 0); the initial seed is 1."""),
    Function("float", "get_lr", "void", "The learning rate in use."),
    Function("void", "reset_optimizer", "void", "Clear the optimizer state (momentum / Adam moments and step count)."),
    Function("void", "fl_begin_round", "void", """\
Federated learning. A round starts at the compiled-in weights, here, or when a global model is
applied; a static copy of the weights at that point costs {P}_PARAMS_SIZE floats of RAM
(generate --no-federated removes it).""", federated=True),
    Function("void", "set_prox_mu", "float mu", """\
FedProx: each update adds mu * (w - w_round) to the gradient (the gradient of mu/2 * ||w - w_round||^2,
w_round the weights at the start of the round), before momentum, weight decay or Adam. 0 (the
initial value) trains as without it.""", federated=True),
    Function("int32_t", "fl_delta", "uint8_t *dst, uint32_t capacity, uint32_t samples, int quantize", """\
Write (current - round start) with the samples trained this round, for the server's weighted
average: float32 ("MTDF", {P}_DELTA_BYTES) or, with quantize != 0, int8 with one float32 scale per
tensor ("MTDQ", {P}_DELTA_INT8_BYTES, ~4x smaller); a model with integer parameters (generate --update int8)
writes its exact deltas ("MTDI", {P}_DELTA_INT_BYTES) either way. Returns bytes written or MT_BLOB_ERR_SIZE.""",
             federated=True),
    Function("int32_t", "fl_apply_global", "const uint8_t *src, uint32_t len", """\
Load a global parameter blob, start a new round from it and clear the optimizer state; refused
like load_params, with nothing changed.""", federated=True),
)


def _format(text: str, prefix: str) -> str:
    return text.replace("{p}", prefix).replace("{P}", prefix.upper())


def declarations(prefix: str, inputs: list[str], federated: bool) -> list[dict]:
    """[{doc, decl}] of every function this build has (doc: the comment block); inputs: the C
    names of the input pointers."""
    args = "".join(f"const float *{c}, " for c in inputs)
    out = []
    for f in FUNCTIONS:
        if f.federated and not federated:
            continue
        doc = _format(f.doc, prefix)
        assert "*/" not in doc and "/*" not in doc and "??" not in doc and "\\" not in doc
        params = _format(f.params.replace("{inputs}", args), prefix)
        out.append({"doc": Safe("/* " + "\n * ".join(doc.splitlines()) + " */"), "decl": f"{f.ret} {prefix}_{f.name}({params});"})
    return out


def cdef(prefix: str, inputs: list[str], label_ctype: str, federated: bool) -> str:
    """What cffi needs to call the trainer: the label type and every declaration."""
    return "\n".join([f"typedef {label_ctype} {prefix}_label_t;",
                      *(d["decl"] for d in declarations(prefix, inputs, federated))])
