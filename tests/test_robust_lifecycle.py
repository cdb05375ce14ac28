"""One bad input must not poison the lifecycle: `aggregate` refuses NaN/Inf, duplicate and
(--max-norm) oversized deltas and non-finite global models, `delta` refuses sample counts its
uint32 field cannot hold, and .npz inputs are checked (names, dtype, declared size) before any
array data is read. Every refusal exits 2, names the file and tensor, and writes nothing."""
from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy
from typer.testing import CliRunner

import codegen
from codegen import blob, federated, npz
from codegen.cli import app
from codegen.errors import DataError

DIGITS = Path(__file__).resolve().parent.parent / "examples" / "digits"


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust") / "digits"
    codegen.generate(DIGITS / "mlp.onnx", out, loss="cross_entropy", batch=16)
    return out


@pytest.fixture(scope="module")
def manifest(build):
    return codegen.manifest.read(build)


def update(manifest, seed=0, scale=0.01) -> dict[str, np.ndarray]:
    """A plausible client update: small random changes to every trainable tensor."""
    rng = np.random.default_rng(seed)
    return {n: (rng.normal(size=s) * scale).astype(np.float32) for n, s in blob.layout(manifest)}


def reframe(data: bytes, offset: int, raw: bytes) -> bytes:
    """`data` with payload bytes at `offset` replaced and a fresh CRC: valid framing, bad values."""
    payload = bytearray(data[blob.HEADER.size:])
    payload[offset:offset + len(raw)] = raw
    magic, version, tensors, hash_, length, _ = blob.HEADER.unpack_from(data)
    return blob.HEADER.pack(magic, version, tensors, hash_, length, zlib.crc32(payload)) + bytes(payload)


def with_value(value):
    def make(m):
        d = update(m)
        d[blob.layout(m)[0][0]].flat[3] = value
        return blob.encode_delta(d, 10, m)
    return make


def int8_scale(value):
    """An int8 delta whose first tensor's float32 scale (right after the sample count) is `value`."""
    return lambda m: reframe(blob.encode_delta(update(m), 10, m, int8=True), 4, struct.pack("<f", value))


BAD_DELTAS = {"nan": with_value(np.nan), "inf": with_value(-np.inf), "int8_nan_scale": int8_scale(np.nan),
              "int8_huge_scale": int8_scale(1e38)}


def refused(tmp_path: Path, args: list, *words: str) -> None:
    """The command exits 2 with every word in its message, no traceback, and no file in tmp_path
    written, changed or left behind."""
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    result = CliRunner().invoke(app, [str(a) for a in args])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in text, result.output
    for word in words:
        assert word in text, (word, text)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def aggregate_args(build, tmp_path, messages: list[bytes], m, **global_values):
    """aggregate over `messages` written to files, into a --global file it would overwrite."""
    paths = []
    for k, data in enumerate(messages):
        paths.append(tmp_path / f"d{k}.bin")
        paths[-1].write_bytes(data)
    g = tmp_path / "global.npz"
    np.savez(g, **{n: np.full(s, global_values.get(n, 0.5), np.float32) for n, s in blob.layout(m)})
    return ["aggregate", build, *paths, "--global", g, "-o", g]


# --- aggregate --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(BAD_DELTAS))
def test_non_finite_delta_refused(build, manifest, tmp_path, case):
    bad = BAD_DELTAS[case](manifest)
    args = aggregate_args(build, tmp_path, [blob.encode_delta(update(manifest), 10, manifest), bad], manifest)
    refused(tmp_path, args, "d1.bin", f"'{blob.layout(manifest)[0][0]}'", "NaN/Inf")


def test_non_finite_global_refused(build, manifest, tmp_path):
    name = blob.layout(manifest)[-1][0]
    args = aggregate_args(build, tmp_path, [blob.encode_delta(update(manifest), 10, manifest)], manifest,
                          **{name: np.nan})
    refused(tmp_path, args, "global.npz", f"'{name}'", "NaN/Inf")


def test_overflowing_average_refused(build, manifest, tmp_path):
    """Finite inputs whose float32 sum is Inf: the result is refused, naming the tensor."""
    name = blob.layout(manifest)[0][0]
    big = {n: np.full(s, 3e38, np.float32) for n, s in blob.layout(manifest)}
    args = aggregate_args(build, tmp_path, [blob.encode_delta(big, 10, manifest)], manifest, **{name: 3e38})
    refused(tmp_path, args, "FedAvg result overflows float32", f"'{name}'")


def test_duplicate_delta_refused(build, manifest, tmp_path):
    data = blob.encode_delta(update(manifest), 10, manifest)
    args = aggregate_args(build, tmp_path, [data, blob.encode_delta(update(manifest, 1), 5, manifest), data],
                          manifest)
    refused(tmp_path, args, "delta", "d2.bin", "the same bytes as delta", "d0.bin")
    d0 = tmp_path / "d0.bin"
    refused(tmp_path, ["aggregate", build, d0, d0, "-o", tmp_path / "new.bin"], "d0.bin", "the same bytes")


def test_max_norm(build, manifest, tmp_path):
    small, large = update(manifest, scale=0.01), update(manifest, 1, scale=1.0)
    size = federated.norm(large)
    args = aggregate_args(build, tmp_path, [blob.encode_delta(d, 10, manifest) for d in (small, large)], manifest)
    refused(tmp_path, args + ["--max-norm", f"{size / 2:g}"], "d1.bin", "L2 norm", f"{size:.6g}")
    for value in ("0", "-1", "nan"):
        refused(tmp_path, args + ["--max-norm", value], "--max-norm must be a positive number")
    result = CliRunner().invoke(app, [str(a) for a in args] + ["--max-norm", f"{size * 2:g}"])
    assert result.exit_code == 0, result.output


def test_huge_value_refused_by_norm(build, manifest, tmp_path):
    """1e38 is finite in float32 and averages to a finite model: only a norm limit catches it."""
    d = update(manifest)
    d[blob.layout(manifest)[0][0]].flat[0] = 1e38
    args = aggregate_args(build, tmp_path, [blob.encode_delta(d, 10, manifest)], manifest)
    refused(tmp_path, args + ["--max-norm", "100"], "d0.bin", "L2 norm 1e+38")


def test_validate_drops_one_client(manifest):
    """A server's loop: each message validated on its own; bad ones are dropped with a typed
    reason and the round averages the rest, as if the bad clients had never sent anything."""
    good = [blob.encode_delta(update(manifest, k), 10 * (k + 1), manifest) for k in range(3)]
    bad = {federated.Reason.NON_FINITE: BAD_DELTAS["int8_nan_scale"](manifest),
           federated.Reason.FORMAT: good[0][:-1],
           federated.Reason.DUPLICATE: good[1],
           federated.Reason.NORM: blob.encode_delta(update(manifest, 9, scale=10.0), 10, manifest)}
    seen, accepted, reasons = {}, [], []
    for k, data in enumerate([good[0], good[1], *bad.values(), good[2]]):
        try:
            accepted.append(federated.validate(data, manifest, f"client {k}", max_norm=50.0, seen=seen))
        except federated.Refused as e:
            assert f"client {k}" in str(e)
            reasons.append(e.reason)
    assert reasons == list(bad)
    g = update(manifest, 42)
    expected = federated.fedavg(g, [blob.decode_delta(d, manifest) for d in good])
    for name, value in federated.fedavg(g, accepted).items():
        np.testing.assert_array_equal(value, expected[name])


# --- delta ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("samples", [0, -1, 2**32, 10**30])
def test_delta_samples_out_of_range(build, manifest, tmp_path, samples):
    params = tmp_path / "p.npz"
    np.savez(params, **update(manifest))
    refused(tmp_path, ["delta", build, "--params", params, "--samples", samples, "-o", tmp_path / "d.bin"],
            "--samples must be between 1 and 4,294,967,295")


def test_delta_max_samples_and_non_finite_params(build, manifest, tmp_path):
    params = tmp_path / "p.npz"
    np.savez(params, **update(manifest))
    args = ["delta", build, "--params", params, "--samples", 2**32 - 1, "-o", tmp_path / "d.bin"]
    assert CliRunner().invoke(app, [str(a) for a in args]).exit_code == 0
    assert blob.decode_delta((tmp_path / "d.bin").read_bytes(), manifest)[1] == 2**32 - 1
    name = blob.layout(manifest)[1][0]
    np.savez(params, **{**update(manifest), name: np.full(dict(blob.layout(manifest))[name], np.inf, np.float32)})
    refused(tmp_path, args, "p.npz", f"'{name}'", "NaN/Inf")


# --- .npz inputs ------------------------------------------------------------------------------------

def npy_member(shape, dtype="<f4", data: bytes = b"") -> bytes:
    """An .npy file whose header declares `shape` whatever data follows."""
    buf = io.BytesIO()
    npy.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def test_npz_declaring_huge_array_refused_before_reading(build, tmp_path):
    """A few bytes whose header claims 2 GiB: refused from the header, without allocating it."""
    data = tmp_path / "huge.npz"
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", npy_member((2**29,), data=bytes(64)))
        z.writestr("y.npy", npy_member((16,), "<i8", bytes(128)))
    tracemalloc.start()
    try:
        refused(tmp_path, ["train", build, "--data", data], "huge.npz", "'x'", "declares 2,147,483,648 bytes")
        assert tracemalloc.get_traced_memory()[1] < 64 << 20
    finally:
        tracemalloc.stop()


def test_npz_size_cap(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((16, 8), np.float32))
    with npz.Archive(tmp_path / "d.npz", "data") as archive:
        assert archive.array("x", max_bytes=512).shape == (16, 8)
        with pytest.raises(DataError, match=r"'x' declares 512 bytes of data, more than the 511 allowed"):
            archive.array("x", max_bytes=511)


@pytest.mark.parametrize("x", [np.array(["a", "b"]), np.array([b"a", b"b"]), np.array([{}, 1], dtype=object),
                               np.array([1 + 2j])], ids=["unicode", "bytes", "object", "complex"])
def test_npz_of_non_numbers_refused(build, manifest, tmp_path, x):
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(2, np.int64), allow_pickle=True)
    refused(tmp_path, ["train", build, "--data", tmp_path / "d.npz"], "d.npz", "'x'", "only bool, integer and float")
    name = blob.layout(manifest)[0][0]
    np.savez(tmp_path / "p.npz", **{**update(manifest), name: x}, allow_pickle=True)
    refused(tmp_path, ["export", build, "--params", tmp_path / "p.npz", "-o", tmp_path / "m.onnx"],
            "p.npz", f"'{name}'", "only bool, integer and float")


def test_npz_missing_or_misshapen_arrays(build, manifest, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((16, 64), np.float32))
    refused(tmp_path, ["train", build, "--data", tmp_path / "d.npz"], "d.npz", "has no 'y'", "['x']")
    params = update(manifest)
    name = next(n for n, s in blob.layout(manifest) if len(s) == 2 and s[0] != s[1])
    np.savez(tmp_path / "p.npz", **{**params, name: params[name].T})
    refused(tmp_path, ["delta", build, "--params", tmp_path / "p.npz", "--samples", 1, "-o", tmp_path / "d.bin"],
            "p.npz", f"'{name}' has shape")
    (tmp_path / "p.npz").write_bytes(b"PK not really a zip")
    refused(tmp_path, ["delta", build, "--params", tmp_path / "p.npz", "--samples", 1, "-o", tmp_path / "d.bin"],
            "p.npz", "is not a parameter blob")


def test_npz_truncated_member_refused(build, tmp_path):
    """Right header and size in the zip directory, corrupted compressed data: a DataError too."""
    np.savez_compressed(tmp_path / "d.npz", x=np.arange(4096, dtype=np.float32), y=np.zeros(16, np.int64))
    data = bytearray((tmp_path / "d.npz").read_bytes())
    data[200:260] = bytes(60)
    (tmp_path / "d.npz").write_bytes(bytes(data))
    refused(tmp_path, ["train", build, "--data", tmp_path / "d.npz"], "d.npz", "'x' cannot be read")


def test_npz_reads_what_numpy_writes(tmp_path):
    arrays = {"f": np.asfortranarray(np.arange(12, dtype=">f8").reshape(3, 4)), "b": np.array([True, False]),
              "u": np.arange(5, dtype=np.uint16), "empty": np.zeros((0, 3), np.float32)}
    np.savez_compressed(tmp_path / "a.npz", **arrays)
    with npz.Archive(tmp_path / "a.npz", "arrays") as archive:
        assert archive.names == set(arrays)
        for name, value in arrays.items():
            got = archive.array(name)
            assert got.dtype == value.dtype
            np.testing.assert_array_equal(got, value)
