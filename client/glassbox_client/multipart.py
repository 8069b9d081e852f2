"""A multipart/form-data body read from disk as it is sent: a file of any size
costs a buffer, not its size in memory. It has a length (so the request
carries Content-Length, which the server checks against its limit before
reading) and calls `progress(sent, total)` as the bytes leave."""

from __future__ import annotations

import mimetypes
import os
import uuid
from collections.abc import Callable
from typing import BinaryIO

from .errors import LocalInputError

ProgressCallback = Callable[[int, int], None]


def _quoted(value: str) -> str:
    # RFC 7578: names and filenames as quoted strings; a quote or line break would end the header.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartFileBody:
    """Text fields, then one file. Pass it as `data=` to requests together with
    `headers={"Content-Type": body.content_type}`."""

    def __init__(
        self,
        fields: dict[str, str],
        *,
        file_field: str,
        path: str | os.PathLike,
        progress: ProgressCallback | None = None,
        boundary: str | None = None,
    ):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise LocalInputError(f"No such file: {self.path}")
        if not os.path.isfile(self.path):
            raise LocalInputError(f"Not a file: {self.path} (archive a model folder as .zip or .tar.gz first)")
        self.boundary = boundary or "glassbox-" + uuid.uuid4().hex
        filename = os.path.basename(self.path)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        head = bytearray()
        for name, value in fields.items():
            head += f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n'.encode()
            head += value.encode("utf-8") + b"\r\n"
        head += (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{_quoted(file_field)}"; filename="{_quoted(filename)}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        self._head = bytes(head)
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.file_size = os.path.getsize(self.path)
        self.length = len(self._head) + self.file_size + len(self._tail)
        self._progress = progress
        self._file: BinaryIO | None = None
        self._stage = 0  # 0 head, 1 file, 2 tail, 3 done
        self._file_read = 0
        self.sent = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        # requests treats an object with __iter__ as a stream; urllib3 reads it with read().
        while True:
            chunk = self.read(1 << 20)
            if not chunk:
                return
            yield chunk

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.length
        chunk = self._next(size)
        if chunk:
            self.sent += len(chunk)
            if self._progress is not None:
                self._progress(self.sent, self.length)
        return chunk

    def _next(self, size: int) -> bytes:
        if self._stage == 0:
            self._stage = 1
            return self._head
        if self._stage == 1:
            if self._file is None:
                self._file = open(self.path, "rb")  # noqa: SIM115 - closed at the end of the file or by close()
            wanted = min(size, self.file_size - self._file_read)
            chunk = self._file.read(wanted) if wanted > 0 else b""
            self._file_read += len(chunk)
            if wanted > 0 and not chunk:
                self.close()
                raise LocalInputError(f"{self.path} became shorter while it was being uploaded")
            if self._file_read >= self.file_size:
                self.close()
                self._stage = 2
            if chunk:
                return chunk
        if self._stage == 2:
            self._stage = 3
            return self._tail
        return b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
