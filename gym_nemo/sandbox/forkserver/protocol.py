"""The fork server's wire formats: client frames, and the marks a call process writes when set up.

Clients (``gym_nemo.sandbox.client``, the docker backend) and the daemon speak frames of a 4-byte
big-endian length + a UTF-8 JSON object, both ways. Requests carry ``id`` and ``op``: ``run`` |
``session_open`` | ``session_run`` | ``session_close`` | ``info`` | ``ping`` | ``shutdown``.

A run's code travels ahead of its stdin on the call's stdin pipe as one frame of the same header and
raw UTF-8 bytes, so the requests a worker sends its zygote stay small whatever the code's size.
"""

from __future__ import annotations

import json
import struct

PROTOCOL = 1
HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024

INFRA_MARK = b"\x00gym_nemo_setup_failed\x00"  # a call process's stderr: setup failed, a traceback follows
READY_MARK = b"\x00gym_nemo_ready\x00"  # a run's first stderr bytes: setup done, what follows is the code's


def encode_frame(obj: dict) -> bytes:
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return HEADER.pack(len(data)) + data


def decode_body(data: bytes) -> dict:
    return json.loads(data.decode("utf-8", "surrogatepass"))


def read_frame_blocking(sock_or_file) -> dict | None:
    """Read one frame from a socket (``recv``) or binary file (``read``); ``None`` at EOF."""
    recv = sock_or_file.recv if hasattr(sock_or_file, "recv") else sock_or_file.read

    def exactly(n: int) -> bytes | None:
        chunks, got = [], 0
        while got < n:
            chunk = recv(n - got)
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    header = exactly(HEADER.size)
    if header is None:
        return None
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds the limit")
    body = exactly(length)
    if body is None:
        return None
    return decode_body(body)
