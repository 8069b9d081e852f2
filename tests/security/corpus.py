"""Building hostile inputs, and the tally of what the platform accepted.

Every builder returns bytes ready to upload. The archives are built in
memory and stay small: a bomb is a few hundred KiB that claims tens of MiB,
and "millions of members" is a zip whose directory says so."""

import io
import json
import struct
import tarfile
import zipfile
from collections import defaultdict
from pathlib import Path

from django.conf import settings

from tests.conftest import api_client_for

# --- the tally --------------------------------------------------------------------------

# class -> [inputs tried, inputs accepted]
TALLY: dict[str, list[int]] = defaultdict(lambda: [0, 0])


def tally(kind: str, *, accepted: bool) -> None:
    TALLY[kind][0] += 1
    TALLY[kind][1] += int(accepted)


def summary_lines() -> list[str]:
    lines = [f"{'attack class':<42}{'tried':>7}{'accepted':>10}"]
    for kind in sorted(TALLY):
        tried, accepted = TALLY[kind]
        lines.append(f"{kind:<42}{tried:>7}{accepted:>10}")
    return lines


def write_summary() -> Path:
    """Also kept as JSON beside the test data, for the README figures."""
    path = Path(settings.DATA_DIR) / "attack-corpus-summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({kind: {"tried": t, "accepted": a} for kind, (t, a) in sorted(TALLY.items())}, indent=2))
    return path


def print_summary(config, path: Path | None = None) -> None:
    """On the terminal, past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in [*summary_lines(), *([f"(kept in {path})"] if path else [])]:
            reporter.write_line(line)


# --- uploads ----------------------------------------------------------------------------


def upload_version(user, model_name: str, data: bytes, filename: str, flavor: str, **card):
    handle = io.BytesIO(data)
    handle.name = filename
    return api_client_for(user).post(
        f"/api/v1/models/{model_name}/versions/", {"artifact": handle, "flavor": flavor, **card}, format="multipart"
    )


def upload_dataset(user, name: str, body: bytes, filename: str = "holdout.csv", **extra):
    handle = io.BytesIO(body)
    handle.name = filename
    return api_client_for(user).post("/api/v1/datasets/", {"file": handle, "name": name, **extra}, format="multipart")


# --- archives ---------------------------------------------------------------------------


def zip_of(members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            archive.writestr(info, data)
    return buffer.getvalue()


def zip_with_symlink(target: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", b"{}")
        link = zipfile.ZipInfo("weights.safetensors")
        link.external_attr = 0o120777 << 16  # S_IFLNK: what `zip --symlinks` records
        archive.writestr(link, target)
    return buffer.getvalue()


def tar_of(entries: list[tuple[str, str, object]], *, mode: str = "w:gz") -> bytes:
    """entries: (name, kind, payload); kind is file, symlink, hardlink, chardev, blockdev or fifo."""
    types = {
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
        "chardev": tarfile.CHRTYPE,
        "blockdev": tarfile.BLKTYPE,
        "fifo": tarfile.FIFOTYPE,
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
                continue
            info.type = types[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = payload
            if kind in ("chardev", "blockdev"):
                info.devmajor, info.devminor = 1, 3
            archive.addfile(info)
    return buffer.getvalue()


def archive_of(members: dict[str, bytes], container: str) -> bytes:
    """Regular files in a zip or a tar.gz."""
    if container == "zip":
        return zip_of(members)
    return tar_of([(name, "file", payload) for name, payload in members.items()])


class Zeros(io.RawIOBase):
    """`size` zero bytes, produced as they are read (never all in memory)."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


MIB = 1024 * 1024


def zip_bomb(unpacked: int = 64 * MIB) -> bytes:
    """One member of `unpacked` zero bytes: ~1000:1 deflated."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b"{}")
        with archive.open("model.safetensors", "w", force_zip64=True) as member:
            for _ in range(unpacked // MIB):
                member.write(bytes(MIB))
    return buffer.getvalue()


def tar_bomb(unpacked: int = 64 * MIB) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("model.safetensors")
        info.size = unpacked
        archive.addfile(info, io.BufferedReader(Zeros(unpacked)))
    return buffer.getvalue()


def zip_lying_about_its_size(unpacked: int = 16 * MIB, declared: int = 1000) -> bytes:
    """A member whose headers declare `declared` bytes while its deflate
    stream unpacks to `unpacked`: the ratio check sees a harmless archive,
    the extraction must count what really comes out."""
    name = b"model.safetensors"
    data = bytearray(zip_of({"config.json": b"{}", name.decode(): bytes(unpacked)}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        local = archive.getinfo(name.decode()).header_offset
    struct.pack_into("<L", data, local + 22, declared)  # local header: uncompressed size
    central = 0
    while (central := data.index(b"PK\x01\x02", central + 1)) and data[central + 46 : central + 46 + len(name)] != name:
        pass
    struct.pack_into("<L", data, central + 24, declared)  # central directory: uncompressed size
    return bytes(data)


def _end_record(data: bytes) -> tuple[int, tuple]:
    offset = len(data) - 22  # no archive comment
    return offset, struct.unpack("<4s4H2LH", data[offset:])


def zip_claiming_members(claimed: int) -> bytes:
    """A small real zip whose zip64 end record says it holds `claimed`
    members (a zip of millions of tiny files has exactly this record)."""
    data = zip_of({"config.json": b"{}", "model.safetensors": b"x"})
    offset, (_, _, _, _, _, cd_size, cd_offset, _) = _end_record(data)
    record64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, claimed, claimed, cd_size, cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, offset, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return data[:offset] + record64 + locator + end


def zip_of_many_members(count: int, *, claim: int | None = None) -> bytes:
    """`count` empty members; with `claim`, the end record lies about the count."""
    data = bytearray(zip_of({f"f{i}": b"" for i in range(count)}, compression=zipfile.ZIP_STORED))
    if claim is not None:
        offset, _ = _end_record(bytes(data))
        struct.pack_into("<2H", data, offset + 8, claim, claim)
    return bytes(data)


# --- pickles ----------------------------------------------------------------------------

# What `pickle.dumps` of a callable reduction looks like: os.system("id").
PICKLE_PROTOCOL_4 = b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x02id\x94\x85\x94R\x94."
PICKLE_PROTOCOL_2 = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03."
PICKLE_PROTOCOL_0 = b"cposix\nsystem\n(S'id'\ntR."


def torch_style_zip(inner_name: str = "archive/data.pkl") -> bytes:
    """What torch.save writes: a zip whose payload is a pickle."""
    return zip_of({inner_name: PICKLE_PROTOCOL_2, "archive/version": b"3\n"})


# --- code -------------------------------------------------------------------------------

PYTHON_SOURCE = b"import os\nos.system('id')\n"


def with_auto_map(members: dict[str, bytes], config: str, auto_map: dict, *, nested: str = "") -> dict[str, bytes]:
    """`members` with an `auto_map` (transformers' pointer at custom code) in
    the JSON `config`, at its top level or inside the sub-config `nested`."""
    values = json.loads(members.get(config, b"{}"))
    if nested:
        values[nested] = {**values.get(nested, {}), "auto_map": auto_map}
    else:
        values["auto_map"] = auto_map
    return {**members, config: json.dumps(values).encode()}
