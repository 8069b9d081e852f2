"""Archive members are checked before anything is extracted."""

import io
import os
import tarfile
import zipfile

import pytest

from glassbox.errors import InvalidInput
from registry.archives import ArchiveLimits, check_member_name, extract_archive, inspect_archive

LIMITS = ArchiveLimits(max_members=50, max_uncompressed_bytes=50 * 1024 * 1024, max_compression_ratio=100)


def write_zip(path, members, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def write_tar(path, entries, mode="w:gz"):
    """entries: list of TarInfo-building callables (name, kind, payload)."""
    with tarfile.open(path, mode) as archive:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = payload
                archive.addfile(info)
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = payload
                archive.addfile(info)
            elif kind == "device":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = 1, 3
                archive.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                archive.addfile(info)
    return path


@pytest.mark.parametrize(
    "name",
    [
        "../evil.txt",
        "a/../../evil.txt",
        "/etc/passwd",
        "C:/windows/evil.dll",
        "..\\evil.txt",
        "a\\b.txt",
        "%2e%2e/evil.txt",
        "a/%2e%2e%2fevil",
        "bad\x00name",
        "line\nbreak",
        "",
    ],
)
def test_unsafe_member_names_are_refused(name):
    with pytest.raises(InvalidInput):
        check_member_name(name)


def test_safe_member_names_are_normalised():
    assert check_member_name("./config.json") == "config.json"
    assert check_member_name("tokenizer/vocab.txt") == "tokenizer/vocab.txt"


@pytest.mark.parametrize("name", ["../escape.txt", "/abs.txt", "sub/../../escape.txt"])
def test_zip_with_traversal_member_is_refused_and_nothing_written(tmp_path, name):
    archive = write_zip(tmp_path / "a.zip", {"config.json": b"{}", name: b"x"})
    target = tmp_path / "out"
    with pytest.raises(InvalidInput):
        extract_archive(archive, target, LIMITS)
    assert not target.exists()
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize(
    "kind,payload", [("symlink", "/etc/passwd"), ("hardlink", "/etc/passwd"), ("device", b""), ("fifo", b"")]
)
def test_tar_links_and_special_files_are_refused(tmp_path, kind, payload):
    archive = write_tar(tmp_path / "a.tar.gz", [("config.json", "file", b"{}"), ("weights", kind, payload)])
    with pytest.raises(InvalidInput, match="link|special"):
        inspect_archive(archive, LIMITS)


def test_zip_symlink_member_is_refused(tmp_path):
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("model.safetensors")
        info.external_attr = 0o120777 << 16  # S_IFLNK
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(InvalidInput, match="link"):
        inspect_archive(path, LIMITS)


def test_zip_bomb_is_refused_by_compression_ratio(tmp_path):
    archive = write_zip(tmp_path / "bomb.zip", {"zeros.bin": b"\0" * (20 * 1024 * 1024)})
    assert os.path.getsize(archive) < 100_000
    with pytest.raises(InvalidInput, match="compression ratio"):
        inspect_archive(archive, LIMITS)


def test_archive_over_total_size_is_refused(tmp_path):
    small_limits = ArchiveLimits(max_members=50, max_uncompressed_bytes=1000, max_compression_ratio=100)
    archive = write_zip(tmp_path / "big.zip", {"a": os.urandom(800), "b": os.urandom(800)}, zipfile.ZIP_STORED)
    with pytest.raises(InvalidInput, match="unpacks to more than"):
        inspect_archive(archive, small_limits)


def test_too_many_members_is_refused_before_the_directory_is_read(tmp_path):
    archive = write_zip(tmp_path / "many.zip", {f"f{i}": b"" for i in range(LIMITS.max_members + 1)})
    with pytest.raises(InvalidInput, match="more than 50 members"):
        inspect_archive(archive, LIMITS)


def test_duplicate_member_is_refused(tmp_path):
    path = tmp_path / "dup.tar"
    write_tar(path, [("config.json", "file", b"{}"), ("./config.json", "file", b"{}")], mode="w")
    with pytest.raises(InvalidInput, match="twice"):
        inspect_archive(path, LIMITS)


def test_member_lying_about_its_size_is_stopped_while_extracting(tmp_path):
    path = write_zip(tmp_path / "liar.zip", {"weights.safetensors": b"A" * 5000}, zipfile.ZIP_STORED)
    # Rewrite the declared uncompressed size in both headers to 10 bytes.
    declared = (5000).to_bytes(4, "little")
    smaller = (10).to_bytes(4, "little")
    path.write_bytes(path.read_bytes().replace(declared + declared, declared + smaller))
    target = tmp_path / "out"
    with pytest.raises(InvalidInput, match="damaged|more than it declares"):
        extract_archive(path, target, LIMITS)
    assert not target.exists()


def test_not_an_archive_is_refused(tmp_path):
    path = tmp_path / "model.txt"
    path.write_bytes(b"just some text that is not an archive" * 20)
    with pytest.raises(InvalidInput, match="not a zip, tar or tar.gz"):
        inspect_archive(path, LIMITS)


def test_good_archive_extracts_every_file(tmp_path):
    archive = write_tar(tmp_path / "ok.tar.gz", [("config.json", "file", b"{}"), ("sub/vocab.txt", "file", b"a\nb")])
    members = extract_archive(archive, tmp_path / "out", LIMITS)
    assert sorted(m.name for m in members) == ["config.json", "sub/vocab.txt"]
    assert (tmp_path / "out" / "sub" / "vocab.txt").read_bytes() == b"a\nb"
