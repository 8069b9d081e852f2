"""Streaming uploads: the SHA-256 and size of an uploaded file are computed
chunk by chunk as it arrives, and the file goes to a temporary file on the
artifact disk, never into memory."""

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler

from glassbox.errors import TooLarge


@dataclass
class UploadedArtifact:
    """A finished upload on local disk, with its digest already known."""

    path: Path
    sha256: str
    size: int
    filename: str

    @classmethod
    def from_uploaded_file(cls, uploaded) -> "UploadedArtifact":
        return cls(Path(uploaded.temporary_file_path()), uploaded.sha256, uploaded.size, uploaded.name)

    @classmethod
    def from_path(cls, path: Path, *, filename: str | None = None) -> "UploadedArtifact":
        """For the CLI and the demo seeding: copy a file into the upload area
        (the service moves or deletes what it is given) and hash it."""
        temp = Path(tempfile.mkstemp(dir=upload_temp_dir(), suffix=".upload")[1])
        digest = hashlib.sha256()
        with open(path, "rb") as source, open(temp, "wb") as target:
            while chunk := source.read(1024 * 1024):
                digest.update(chunk)
                target.write(chunk)
        return cls(temp, digest.hexdigest(), temp.stat().st_size, filename or Path(path).name)

    def discard(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass


def upload_temp_dir() -> str:
    path = settings.FILE_UPLOAD_TEMP_DIR
    os.makedirs(path, exist_ok=True)
    return path


class HashingUploadHandler(TemporaryFileUploadHandler):
    # Larger chunks than Django's 64 KiB: fewer Python-level iterations per GiB.
    chunk_size = 1024 * 1024

    def __init__(self, request=None, *, max_bytes: int):
        super().__init__(request)
        self.max_bytes = max_bytes

    def new_file(self, *args, **kwargs):
        upload_temp_dir()
        super().new_file(*args, **kwargs)
        self._digest = hashlib.sha256()
        self._received = 0

    def receive_data_chunk(self, raw_data, start):
        self._received += len(raw_data)
        if self._received > self.max_bytes:
            self.request.glassbox_upload_too_large = True
            raise StopUpload(connection_reset=True)
        self._digest.update(raw_data)
        self.file.write(raw_data)

    def file_complete(self, file_size):
        uploaded = super().file_complete(file_size)
        uploaded.sha256 = self._digest.hexdigest()
        return uploaded


def install_hashing_upload_handler(request, *, max_bytes: int) -> None:
    """Call before anything reads request.POST / request.FILES. Refuses at
    once when the declared body is already over the limit."""
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    # Multipart framing adds a little; allow 1 MiB of it before refusing up front.
    if declared > max_bytes + 1024 * 1024:
        raise TooLarge(f"The upload is {declared} bytes; the limit is {max_bytes} bytes.")
    request.upload_handlers = [HashingUploadHandler(request, max_bytes=max_bytes)]


def check_upload_not_truncated(request, *, max_bytes: int) -> None:
    if getattr(request, "glassbox_upload_too_large", False):
        raise TooLarge(f"The upload exceeds the limit of {max_bytes} bytes.")
