"""Checking archives member by member before anything is written.

Every member name, type and size is inspected first (absolute paths, `..`,
Windows separators, percent-encoding, links, devices, member count, total
size, compression ratio); extraction then re-checks while it writes, counting
the bytes that really come out, because an archive's declared sizes can lie.
"""

import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from glassbox.errors import InvalidInput

ZIP = "zip"
TAR = "tar"
TAR_GZ = "tar.gz"
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int
    max_uncompressed_bytes: int
    max_compression_ratio: int

    @classmethod
    def from_settings(cls) -> "ArchiveLimits":
        from django.conf import settings

        limits = settings.GLASSBOX_UPLOAD_LIMITS
        return cls(limits["max_members"], limits["max_uncompressed_bytes"], limits["max_compression_ratio"])


@dataclass(frozen=True)
class ArchiveMember:
    name: str
    size: int


def detect_format(path: Path) -> str:
    """By content, never by file name."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return ZIP
    if head.startswith(b"\x1f\x8b"):
        return TAR_GZ
    if len(head) >= 262 and head[257:262] == b"ustar":
        return TAR
    raise InvalidInput("The artifact is not a zip, tar or tar.gz archive.")


def check_member_name(name: str) -> str:
    """Return the member's safe relative path or refuse the archive."""
    if not name or len(name) > 255:
        raise InvalidInput(f"Archive member name {name[:80]!r} is empty or too long.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidInput(f"Archive member {name!r} has control characters in its name.")
    if "\\" in name:
        raise InvalidInput(f"Archive member {name!r} uses Windows path separators.")
    if "%" in name:
        # Percent-encoded names ("%2e%2e%2f") are a traversal trick in tools that decode them.
        raise InvalidInput(f"Archive member {name!r} has percent-encoding in its name.")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InvalidInput(f"Archive member {name!r} has an absolute path.")
    parts = PurePosixPath(name).parts
    if any(part == ".." for part in parts):
        raise InvalidInput(f"Archive member {name!r} points outside the archive ('..').")
    clean = "/".join(part for part in parts if part not in ("", "."))
    if not clean:
        raise InvalidInput(f"Archive member name {name!r} is empty.")
    return clean


class _Totals:
    def __init__(self, limits: ArchiveLimits, archive_size: int):
        self.limits = limits
        self.archive_size = max(archive_size, 1)
        self.count = 0
        self.total = 0
        self.names: set[str] = set()

    def add(self, name: str, size: int) -> None:
        self.count += 1
        if self.count > self.limits.max_members:
            raise InvalidInput(f"The archive has more than {self.limits.max_members} members.")
        if name in self.names:
            raise InvalidInput(f"Archive member {name!r} appears twice.")
        self.names.add(name)
        self.total += size
        if self.total > self.limits.max_uncompressed_bytes:
            raise InvalidInput(f"The archive unpacks to more than {self.limits.max_uncompressed_bytes} bytes.")
        # Measured against the whole archive: a zip bomb is many members of
        # tiny compressed size, and a large real model is mostly incompressible.
        if self.total > 1024 * 1024 and self.total / self.archive_size > self.limits.max_compression_ratio:
            raise InvalidInput(
                f"The archive's compression ratio exceeds {self.limits.max_compression_ratio}:1 (zip bomb?)."
            )


def _zip_member_is_link(info: zipfile.ZipInfo) -> bool:
    # Unix file type bits, when the zip tool recorded them (many leave them 0).
    file_type = stat.S_IFMT(info.external_attr >> 16)
    return file_type not in (0, stat.S_IFREG, stat.S_IFDIR)


def _check_zip_entry_count(path: Path, limits: ArchiveLimits) -> None:
    """Read the member count from the end-of-central-directory record, so a zip
    of millions of tiny members is refused before its directory is parsed."""
    with open(path, "rb") as handle:
        end_record = zipfile._EndRecData(handle)  # handles zip64; stable since Python 2
    if end_record is None:
        raise InvalidInput("The archive is damaged: no zip directory found.")
    if end_record[zipfile._ECD_ENTRIES_TOTAL] > limits.max_members:
        raise InvalidInput(f"The archive has more than {limits.max_members} members.")


def inspect_archive(path: Path, limits: ArchiveLimits) -> tuple[str, list[ArchiveMember]]:
    """List the regular files of the archive, refusing it at the first unsafe member."""
    fmt = detect_format(path)
    totals = _Totals(limits, path.stat().st_size)
    members: list[ArchiveMember] = []
    try:
        if fmt == ZIP:
            _check_zip_entry_count(path, limits)
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    name = check_member_name(info.filename)
                    if _zip_member_is_link(info):
                        raise InvalidInput(f"Archive member {info.filename!r} is a link or special file.")
                    if info.flag_bits & 0x1:
                        raise InvalidInput(f"Archive member {info.filename!r} is encrypted.")
                    totals.add(name, info.file_size)
                    if not info.is_dir():
                        members.append(ArchiveMember(name, info.file_size))
        else:
            with tarfile.open(path, mode="r:*") as archive:
                for info in archive:
                    name = check_member_name(info.name)
                    if info.issym() or info.islnk():
                        raise InvalidInput(f"Archive member {info.name!r} is a link.")
                    if not (info.isreg() or info.isdir()):
                        raise InvalidInput(f"Archive member {info.name!r} is a device or special file.")
                    totals.add(name, info.size)
                    if info.isreg():
                        members.append(ArchiveMember(name, info.size))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(f"The archive is damaged: {exc}") from exc
    if not members:
        raise InvalidInput("The archive holds no files.")
    return fmt, members


def _copy_limited(source, target_path: Path, declared: int, budget: list[int]) -> None:
    written = 0
    with open(target_path, "xb") as target:
        while chunk := source.read(_COPY_CHUNK):
            written += len(chunk)
            budget[0] -= len(chunk)
            if written > declared or budget[0] < 0:
                raise InvalidInput(f"Archive member {target_path.name!r} unpacks to more than it declares.")
            target.write(chunk)


def extract_archive(path: Path, destination: Path, limits: ArchiveLimits) -> list[ArchiveMember]:
    """Inspect, then extract into `destination` (which must not exist yet).
    On any refusal nothing is left behind."""
    fmt, members = inspect_archive(path, limits)
    destination.mkdir(parents=True)
    budget = [limits.max_uncompressed_bytes]
    root = destination.resolve()
    try:
        if fmt == ZIP:
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if info.is_dir():
                        continue
                    target = _target_path(root, check_member_name(info.filename))
                    with archive.open(info) as source:
                        _copy_limited(source, target, info.file_size, budget)
        else:
            with tarfile.open(path, mode="r:*") as archive:
                for info in archive:
                    if not info.isreg():
                        continue
                    target = _target_path(root, check_member_name(info.name))
                    source = archive.extractfile(info)
                    _copy_limited(source, target, info.size, budget)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        shutil.rmtree(destination, ignore_errors=True)
        raise InvalidInput(f"The archive is damaged: {exc}") from exc
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    return members


def _target_path(root: Path, relative: str) -> Path:
    target = (root / relative).resolve()
    # Belt and braces after the name checks: the path must stay inside root.
    if os.path.commonpath([root, target]) != str(root):
        raise InvalidInput(f"Archive member {relative!r} points outside the archive.")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target
