"""Host side of the device's persistence/transport format (layout: runtime_c/kernels/blob.h).
Python writes and reads the same bytes as the generated C, so a parameter blob or a delta moves
between device, server and CLI unchanged; every field is checked before anything is used.

Format version 2 added the state section: after the trainable tensors, the non-trainable state
training changes (BatchNorm running statistics of generate --mode train, manifest.state), in
blobs and deltas alike, so FedAvg averages it like the weights. The dicts of tensors these
functions take and return hold both parts by name (layout).

Format version 3 added integer parameters (generate --update int8): in a blob, an int8 or int32
tensor holds its bytes in as many 4-byte words (word_bits); such a model's delta is one kind,
MTDI, every tensor's exact difference in its own type (int8 ones as int16)."""
from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from . import npz
from .errors import DataError
from .manifest import Manifest
from .files import write_atomic

HEADER = struct.Struct("<4sHHIII")  # magic, version, tensors, model hash, payload bytes, CRC-32
VERSION = 3  # 2: the state section after the trainable tensors; 3: integer parameters (MTDI deltas)
PARAMS, DELTA_F32, DELTA_I8, DELTA_INT = b"MTPB", b"MTDF", b"MTDQ", b"MTDI"
MAX_SAMPLES = 0xFFFFFFFF  # a delta's sample count is a uint32
KIND = {PARAMS: "parameter blob", DELTA_F32: "float32 delta", DELTA_I8: "int8 delta",
        DELTA_INT: "delta of integer parameters"}
DELTA_TYPES = {"float32": "<f4", "int8": "<i2", "int32": "<i4"}  # an MTDI delta's element per tensor dtype
# The C functions' return codes (MT_BLOB_ERR_* in blob.h).
CODES = {-1: "size", -2: "magic", -3: "version", -4: "hash", -5: "count", -6: "length", -7: "crc"}


def _canon(value):
    """Attribute values in a form json can hash the same way on every run."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    return value if isinstance(value, (int, float, str)) else repr(value)


def model_hash(tg) -> int:
    """32-bit hash of the forward graph's structure and the trainable names/shapes: blobs and
    deltas are only exchanged between builds of the same model and trainable set. The batch size,
    loss and optimizer do not change which weights fit, so they are left out."""
    g = tg.graph
    nodes = [[n.op, n.domain, n.inputs, n.outputs, sorted((k, _canon(v)) for k, v in n.attrs.items())]
             for n in g.nodes[:tg.n_forward]]
    params = [[n, list(g.shape(n))] + ([g.tensors[n].dtype] if g.tensors[n].dtype != "float32" else [])
              for n in tg.trainable]
    text = json.dumps({"nodes": nodes, "params": params}, sort_keys=True)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def layout(manifest: Manifest) -> list[tuple[str, tuple[int, ...]]]:
    """The tensors of a blob or delta in order: the trainable ones, then the state section."""
    return [(p.name, p.shape) for p in (*manifest.params, *manifest.state)]


def word_bits(dtype: str, value) -> np.ndarray:
    """A tensor's values as the float32 words that hold its bytes in a blob (little-endian; int8
    padded to whole words): the float32 values themselves, or an integer parameter's bytes."""
    raw = np.asarray(value, np.dtype(dtype).newbyteorder("<")).tobytes()
    return np.frombuffer(raw + bytes(-len(raw) % 4), "<f4")


def delta_bytes(dtype: str, size: int) -> int:
    """Bytes of one tensor in an MTDI delta: 4-byte words of its DELTA_TYPES elements."""
    item = np.dtype(DELTA_TYPES[dtype]).itemsize
    return 4 * ((size * item + 3) // 4)


def integer(manifest: Manifest) -> bool:
    """Whether the model has parameters that train as integers (--update int8)."""
    return any(p.dtype != "float32" for p in manifest.params)


def delta_kind(manifest: Manifest, int8: bool = False) -> bytes:
    """The delta a model sends: MTDI with integer parameters, else float32 or (int8) MTDQ."""
    return DELTA_INT if integer(manifest) else DELTA_I8 if int8 else DELTA_F32


def sizes(manifest: Manifest) -> dict[bytes, int]:
    """Total message bytes of each kind for this model (the C's *_BLOB_BYTES / *_DELTA_*_BYTES)."""
    specs = (*manifest.params, *manifest.state)
    count = sum(s.words for s in specs)
    tensors = len(layout(manifest))
    return {PARAMS: HEADER.size + 4 * count, DELTA_F32: HEADER.size + 4 + 4 * count,
            DELTA_I8: HEADER.size + 4 + 4 * tensors + count,
            DELTA_INT: HEADER.size + 4 + sum(delta_bytes(s.dtype, s.size) for s in specs)}


def _finish(magic: bytes, manifest: Manifest, payload: bytes) -> bytes:
    header = HEADER.pack(magic, VERSION, len(layout(manifest)), manifest.model_hash, len(payload),
                         zlib.crc32(payload))
    return header + payload


def check(data: bytes, manifest: Manifest, magics: tuple[bytes, ...]) -> tuple[bytes, bytes]:
    """(magic, payload) of a valid message of one of `magics` for this model; otherwise DataError
    naming the field at fault. The same checks, in the same order, as mt_blob_check in C."""
    data = bytes(data)
    what = " or ".join(KIND[m] for m in magics)
    if len(data) < HEADER.size:
        raise DataError(f"{what} refused: {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    magic, version, tensors, hash_, length, crc = HEADER.unpack_from(data)
    if magic not in magics:
        raise DataError(f"{what} refused: magic {magic!r} (expected {' or '.join(map(repr, magics))})")
    if version != VERSION:
        raise DataError(f"{what} refused: format version {version}; this mcutrain reads version {VERSION}")
    if hash_ != manifest.model_hash:
        raise DataError(f"{what} refused: model hash 0x{hash_:08X} is not this build's "
                        f"0x{manifest.model_hash:08X} (it comes from another model or trainable set)")
    if tensors != len(layout(manifest)):
        raise DataError(f"{what} refused: {tensors} tensors, this model has {len(manifest.params)} trainable "
                        f"+ {len(manifest.state)} state tensors")
    expected = sizes(manifest)[magic] - HEADER.size
    if length != expected:
        raise DataError(f"{what} refused: payload length field {length}, this model's is {expected}")
    if len(data) != HEADER.size + length:
        raise DataError(f"{what} refused: {len(data)} bytes, expected {HEADER.size + length} "
                        "(truncated or trailing bytes)")
    payload = data[HEADER.size:]
    if zlib.crc32(payload) != crc:
        raise DataError(f"{what} refused: CRC-32 mismatch (0x{zlib.crc32(payload):08X} != 0x{crc:08X}): "
                        "the payload is corrupted")
    return magic, payload


def split(flat: np.ndarray, manifest: Manifest, specs=None) -> dict[str, np.ndarray]:
    """The flat trainable blob of float32 words (get_params order; or of `specs`, e.g.
    manifest.state) as arrays by tensor name; an integer parameter as its own dtype."""
    out, offset = {}, 0
    for s in (manifest.params if specs is None else specs):
        part = np.asarray(flat[offset:offset + s.words], "<f4")
        value = part if s.dtype == "float32" else np.frombuffer(part.tobytes(), np.dtype(s.dtype).newbyteorder("<"),
                                                                count=s.size)
        out[s.name] = value.astype(s.dtype).reshape(s.shape)
        offset += s.words
    return out


def pack(params: dict[str, np.ndarray], specs) -> np.ndarray:
    """The float32 words of `params` in the order of `specs` (split's inverse). An integer
    parameter takes integer values in its dtype's range (DataError naming it otherwise)."""
    parts = []
    for s in specs:
        value = np.asarray(params[s.name])
        if s.dtype != "float32":
            info = np.iinfo(s.dtype)
            if not np.all(np.isfinite(value)) or np.any(value != np.round(value)) \
                    or value.min(initial=0) < info.min or value.max(initial=0) > info.max:
                raise DataError(f"parameter '{s.name}' trains as {s.dtype} (--update int8): its values must be "
                                f"integers in [{info.min}, {info.max}]")
        parts.append(word_bits(s.dtype, value.astype(s.dtype)).ravel())
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _split_all(flat: np.ndarray, manifest: Manifest) -> dict[str, np.ndarray]:
    """A message's payload of floats: trainable tensors and state by name."""
    return split(flat, manifest, (*manifest.params, *manifest.state))


def _flat(params: dict[str, np.ndarray], manifest: Manifest) -> np.ndarray:
    missing = [n for n, _ in layout(manifest) if n not in params]
    if missing:
        raise DataError(f"no value for {', '.join(missing)}: a parameter blob holds every trainable tensor and "
                        "the state (running statistics)")
    return pack(params, (*manifest.params, *manifest.state))


def encode_params(params: dict[str, np.ndarray], manifest: Manifest) -> bytes:
    return _finish(PARAMS, manifest, _flat(params, manifest).tobytes())


def decode_params(data: bytes, manifest: Manifest) -> dict[str, np.ndarray]:
    _, payload = check(data, manifest, (PARAMS,))
    return _split_all(np.frombuffer(payload, "<f4"), manifest)


def quantize(d: np.ndarray) -> tuple[np.float32, np.ndarray]:
    """(scale, int8) as mt_delta_i8 computes them in float32: the same bytes as the device."""
    d = np.asarray(d, np.float32).ravel()
    scale = np.float32(np.abs(d).max(initial=np.float32(0)) / np.float32(127))
    if scale == 0:
        return scale, np.zeros(d.shape, np.int8)
    q = np.floor(d / scale + np.float32(0.5))
    return scale, np.where(q >= -127, np.minimum(q, 127), -127).astype(np.int8)


def encode_delta(delta: dict[str, np.ndarray], samples: int, manifest: Manifest, int8: bool = False) -> bytes:
    """The delta message of delta_kind(manifest, int8) (MTDI: each tensor's difference in its own
    type, integer ones saturated as the C does)."""
    head = struct.pack("<I", samples)
    if integer(manifest):
        parts = []
        for s in (*manifest.params, *manifest.state):
            kind = np.dtype(DELTA_TYPES[s.dtype])
            value = np.asarray(delta[s.name])
            if kind.kind == "i":
                limit = np.iinfo(kind).max
                value = np.clip(np.rint(value.astype(np.float64)), -limit, limit)
            raw = value.astype(kind).tobytes()
            parts.append(raw + bytes(delta_bytes(s.dtype, s.size) - len(raw)))
        return _finish(DELTA_INT, manifest, head + b"".join(parts))
    if not int8:
        return _finish(DELTA_F32, manifest, head + _flat(delta, manifest).tobytes())
    pairs = [quantize(delta[n]) for n, _ in layout(manifest)]
    scales = np.array([s for s, _ in pairs], "<f4").tobytes()
    return _finish(DELTA_I8, manifest, head + scales + b"".join(q.tobytes() for _, q in pairs))


def decode_delta(data: bytes, manifest: Manifest) -> tuple[dict[str, np.ndarray], int]:
    """(delta by tensor name, sample count): float32, int8 deltas dequantized (q * scale); an
    MTDI delta's integer tensors as int64 (steps of their integers)."""
    magic, payload = check(data, manifest, (DELTA_INT,) if integer(manifest) else (DELTA_F32, DELTA_I8))
    (samples,) = struct.unpack_from("<I", payload)
    if magic == DELTA_INT:
        out, offset = {}, 4
        for s in (*manifest.params, *manifest.state):
            value = np.frombuffer(payload, DELTA_TYPES[s.dtype], count=s.size, offset=offset)
            out[s.name] = value.astype(np.float32 if s.dtype == "float32" else np.int64).reshape(s.shape)
            offset += delta_bytes(s.dtype, s.size)
        return out, samples
    if magic == DELTA_F32:
        return _split_all(np.frombuffer(payload, "<f4", offset=4).astype(np.float32), manifest), samples
    tensors = len(layout(manifest))
    scales = np.frombuffer(payload, "<f4", count=tensors, offset=4)
    q = np.frombuffer(payload, np.int8, offset=4 + 4 * tensors)
    out = _split_all(q.astype(np.float32), manifest)
    with np.errstate(over="ignore", invalid="ignore"):  # a NaN/huge scale gives NaN/Inf: validate refuses those
        return {n: v * scales[i] for i, (n, v) in enumerate(out.items())}, samples


def read_params(path: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    """Trainable weights and state from a parameter blob or an .npz of name -> array (`train --save`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"parameter file '{path}' not found")
    with path.open("rb") as f:
        if f.read(4) == PARAMS:
            return decode_params(path.read_bytes(), manifest)
    expected = {s.name: s for s in (*manifest.params, *manifest.state)}
    with npz.Archive(path, f"a parameter blob (magic {PARAMS!r}) or an .npz file") as archive:
        if archive.names != set(expected):
            raise DataError(f"'{path}' has tensors {sorted(archive.names)}; this model trains (or keeps as state) "
                            f"{sorted(expected)}")
        params = {n: archive.array(n, s.shape) for n, s in expected.items()}
    return split(pack(params, expected.values()), manifest, expected.values())


def write_params(path: Path, params: dict[str, np.ndarray], manifest: Manifest) -> None:
    """An .npz when the name ends in .npz, a parameter blob otherwise."""
    path = Path(path)
    if path.suffix == ".npz":
        buf = io.BytesIO()
        np.savez(buf, **split(_flat(params, manifest), manifest, (*manifest.params, *manifest.state)))
        write_atomic(path, buf.getvalue())
    else:
        write_atomic(path, encode_params(params, manifest))
