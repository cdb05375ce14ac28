"""The host end of the serial line of a board running the federated harness (`mcutrain build
--harness federated`, harness_federated.c.j2). The line carries the existing messages (parameter
blob MTPB, deltas MTDF/MTDQ, each with its header and CRC: blob.py) behind a 4-byte command or
reply word; docs/flower.md documents it. The board is the firmware under QEMU (its UART on a unix
socket this side listens on) or a real board's serial device. Every read has a deadline, so a
silent or crashed board fails the round instead of hanging it."""
from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import tempfile
import time
import tty
from pathlib import Path

from . import blob, firmware, qemu, targets
from .errors import DataError
from .manifest import Manifest

TRAIN_FLOAT, TRAIN_INT8, STOP = b"MTRF", b"MTRQ", b"MTSP"  # host -> board
OK, REFUSED = b"MTOK", b"MTER"  # board -> host


def _accept(server: socket.socket, process: subprocess.Popen, timeout: float) -> socket.socket | None:
    """The emulator's connection to the listening socket, or None if it exits or the time is up first."""
    deadline = time.monotonic() + timeout
    server.settimeout(0.1)
    while process.poll() is None and time.monotonic() < deadline:
        try:
            return server.accept()[0]
        except socket.timeout:
            continue
    return None


def _said(output) -> str:
    """The end of what the emulator printed (its errors, the firmware's semihosting output)."""
    output.seek(0)
    text = output.read()[-600:].decode(errors="replace").strip()
    return f"; it printed: {text}" if text else ""


class LinkError(DataError):
    """The line failed: no answer in time, closed, or bytes that are not a reply. The board may be
    mid-message: close it (and start it again) before the next round."""


class Board:
    """One board on one line: `round` sends a global model and returns its (loss, delta bytes)."""

    def __init__(self, fd: int, manifest: Manifest, name: str, timeout: float, process=None, output=None):
        self.fd, self.manifest, self.name, self.timeout = fd, manifest, name, timeout
        self.process, self.output = process, output

    @classmethod
    def emulate(cls, build_dir: str | Path, target_name: str, manifest: Manifest, timeout: float = 120.0) -> Board:
        """The build's federated firmware for `target_name` under QEMU."""
        target = targets.load(target_name)
        firmware.check_current(build_dir, target)
        if firmware.read_info(build_dir, target).get("harness") != "federated":
            raise DataError(f"the firmware for '{target.name}' in '{build_dir}' is not a federated client: build it "
                            f"with `mcutrain build {build_dir} --target {target.name} --data ... --harness federated`")
        folder = tempfile.mkdtemp(prefix="mcutrain-uart-")  # short: a socket path has at most 107 bytes
        path = Path(folder) / "uart"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        output = tempfile.TemporaryFile()
        try:
            server.bind(str(path))
            server.listen(1)
            process = qemu.start(build_dir, target, path, output)
            conn = _accept(server, process, timeout)
            if conn is None:
                ended = process.poll()
                why = f"within {timeout:g} s" if ended is None else f"(it exited with code {ended})"
                process.kill()
                process.wait()
                raise LinkError(f"QEMU did not connect the UART of '{target.name}' {why}{_said(output)}")
        finally:
            server.close()
            path.unlink(missing_ok=True)
            os.rmdir(folder)
        conn.setblocking(True)
        return cls(conn.detach(), manifest, f"board {target.name} (QEMU)", timeout, process, output)

    @classmethod
    def open(cls, device: str | Path, manifest: Manifest, timeout: float = 120.0) -> Board:
        """A real board's serial device (e.g. /dev/ttyACM0), set to raw bytes; its speed as configured
        (`stty -F DEVICE 115200`)."""
        try:
            fd = os.open(device, os.O_RDWR | os.O_NOCTTY)
        except OSError as e:
            raise LinkError(f"cannot open the serial device '{device}': {e.strerror}") from None
        if os.isatty(fd):
            tty.setraw(fd)
        return cls(fd, manifest, f"board on {device}", timeout)

    def _read(self, n: int, deadline: float) -> bytes:
        data = b""
        while len(data) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise LinkError(f"{self.name} did not answer within {self.timeout:g} s{self._exit_note()}")
            chunk = os.read(self.fd, n - len(data))
            if not chunk:
                raise LinkError(f"{self.name} closed the serial line{self._exit_note()}")
            data += chunk
        return data

    def _exit_note(self) -> str:
        if self.process is None:
            return ""
        try:
            code = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:  # still running: no exit code to report
            return ""
        return f" (the firmware exited with code {code}{', a fault' if code == 127 else ''}){_said(self.output)}"

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def round(self, params_blob: bytes, int8: bool = False) -> tuple[float, bytes]:
        """Train one round on the board from `params_blob` (an MTPB message): the last local epoch's
        mean loss and the board's delta message, unchecked (federated.validate checks it)."""
        deadline = time.monotonic() + self.timeout
        self._write((TRAIN_INT8 if int8 else TRAIN_FLOAT) + bytes(params_blob))
        word = self._read(4, deadline)
        if word == REFUSED:
            (code,) = struct.unpack("<i", self._read(4, deadline))
            raise DataError(f"{self.name} refused the global model: {blob.CODES.get(code, 'unknown')} check "
                            f"(code {code}, runtime/kernels/blob.h)")
        if word != OK:
            raise LinkError(f"{self.name} sent {word!r} where a reply word ({OK!r} or {REFUSED!r}) belongs")
        (loss,) = struct.unpack("<f", self._read(4, deadline))
        header = self._read(blob.HEADER.size, deadline)
        length = blob.HEADER.unpack(header)[4]
        if length > max(blob.sizes(self.manifest).values()):
            raise LinkError(f"{self.name} announced a {length:,}-byte payload, more than any message of this model")
        return loss, header + self._read(length, deadline)

    def close(self) -> None:
        """Stop the firmware (MTSP: under QEMU it exits 0) and release the line (after QEMU's exit:
        it drops what is unread on a closed socket)."""
        try:
            self._write(STOP)
        except OSError:
            pass  # already gone
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.output.close()
        os.close(self.fd)
