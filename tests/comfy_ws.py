"""A minimal RFC 6455 websocket server side on top of the stdlib (for the ComfyUI test double).

Only what the double needs: the opening handshake answer, reading (possibly fragmented,
always masked) client frames, and writing unmasked server frames. Pings are answered.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked server frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def _read_exact(rfile, n: int) -> bytes:
    data = rfile.read(n)
    if data is None or len(data) < n:
        raise ConnectionError("websocket closed by peer")
    return data


def read_frame(rfile) -> tuple[bool, int, bytes]:
    """(fin, opcode, unmasked payload) of the next frame; ConnectionError at EOF."""
    b1, b2 = _read_exact(rfile, 2)
    fin, opcode, masked, n = bool(b1 & 0x80), b1 & 0x0F, bool(b2 & 0x80), b2 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", _read_exact(rfile, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", _read_exact(rfile, 8))
    mask = _read_exact(rfile, 4) if masked else b"\0\0\0\0"
    payload = _read_exact(rfile, n)
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return fin, opcode, payload


class WsConnection:
    """One accepted websocket: thread-safe sends, a blocking message reader, abrupt or clean close."""

    def __init__(self, sock: socket.socket, rfile, sid: str) -> None:
        self.sock = sock
        self.rfile = rfile
        self.sid = sid
        self.supports_preview_metadata = False
        self._lock = threading.Lock()
        self.closed = False

    def send_text(self, text: str) -> None:
        self._send(encode_frame(OP_TEXT, text.encode("utf-8")))

    def send_binary(self, data: bytes) -> None:
        self._send(encode_frame(OP_BINARY, data))

    def _send(self, frame: bytes) -> None:
        with self._lock:
            if self.closed:
                return
            try:
                self.sock.sendall(frame)
            except OSError:
                self.closed = True

    def messages(self):
        """Yield (opcode, payload) of complete data messages until the peer closes."""
        buf, first_op = b"", OP_TEXT
        while not self.closed:
            try:
                fin, op, payload = read_frame(self.rfile)
            except (ConnectionError, OSError, ValueError):
                return
            if op == OP_PING:
                self._send(encode_frame(OP_PONG, payload))
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                self._send(encode_frame(OP_CLOSE, payload[:2]))
                return
            if op != OP_CONT:
                buf, first_op = b"", op
            buf += payload
            if fin:
                yield first_op, buf
                buf = b""

    def drop(self) -> None:
        """Cut the TCP connection without a close frame (a crashed server or a network failure)."""
        with self._lock:
            self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
