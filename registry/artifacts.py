"""Where artifacts live: the immutable store (local folder or S3, under the
SHA-256) and a local cache of unpacked copies that predictors load from.

No process assumes it shares a disk with another: each keeps its own cache
under its data directory, filled from the store by digest on first use, and
a fetched file is hashed before anything reads it (a mismatch is refused,
never loaded). Every storage call goes through here, so a fault of the store
(unreachable, no bucket, credentials refused) is one error: StorageUnavailable."""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import storages

from glassbox.errors import ArtifactIntegrityError, InvalidInput, StorageUnavailable
from registry.archives import ZIP, ArchiveLimits, ArchiveMember, extract_archive, inspect_archive
from registry.mlflow_models import (
    MLFLOW_UPLOAD_FLAVOR,
    MlflowModel,
    arrange_for_loading,
    find_mlmodel_root,
    read_mlflow_model,
)

logger = logging.getLogger(__name__)

_EXTENSIONS = {"zip": "zip", "tar": "tar", "tar.gz": "tar.gz"}
# Weight formats that unpickle on load. Refused by name here, and by content below.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".h5")
SKOPS_SCHEMA_MEMBER = "schema.json"
# Python code, which transformers would import with trust_remote_code. Remote
# code stays off, so it would never run, but an approved artifact must hold
# only what Glassbox loads: refused under any name, in any folder.
CODE_SUFFIXES = (".py", ".pyw", ".pyc", ".pyo")
# The configs transformers reads an `auto_map` (a pointer at that code) from:
# config.json, tokenizer_config.json, and the processor / generation configs.
CONFIG_SUFFIX = "config.json"
_CONFIG_MAX_BYTES = 16 * 1024 * 1024


def artifact_storage():
    return storages["artifacts"]


def artifact_key(sha256: str, fmt: str, *, kind: str = "models") -> str:
    return f"{kind}/{sha256[:2]}/{sha256}.{_EXTENSIONS.get(fmt, fmt)}"


def _storage_fault(exc: Exception) -> StorageUnavailable | None:
    """What a storage client's exception means for us: a StorageUnavailable
    with a reason an operator can act on, or None (not a fault of the store)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # local storage only: boto3 is not needed
        return None
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and exc.operation_name == "HeadBucket"):
            return StorageUnavailable("The artifact store's bucket does not exist.", reason="no_such_bucket")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden") or status == 403:
            return StorageUnavailable("The artifact store refused our credentials.", reason="access_denied")
        return StorageUnavailable(f"The artifact store answered {code or status}.", reason="error")
    if isinstance(exc, BotoCoreError):
        return StorageUnavailable("The artifact store cannot be reached.", reason="unreachable")
    return None


def _is_missing_object(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict) or getattr(exc, "operation_name", "") == "HeadBucket":
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code == "NoSuchKey" or (status == 404 and code != "NoSuchBucket")


@contextmanager
def storage_errors():
    """Turn a fault of the artifact store into StorageUnavailable (API: 503
    `storage_unavailable`; tasks: retried, as it is an OSError too)."""
    try:
        yield
    except StorageUnavailable:
        raise
    except Exception as exc:
        if _is_missing_object(exc):
            raise FileNotFoundError("The file is not in the artifact store.") from exc
        fault = _storage_fault(exc)
        if fault is None:
            raise
        logger.warning("artifact store fault: %s (%s)", fault.message, exc)
        raise fault from exc


def check_artifact_storage() -> None:
    """Raise StorageUnavailable unless the store answers: the bucket exists
    and our credentials may read it (S3), or the folder is writable (local).
    For /readyz and for a worker's start."""
    storage = artifact_storage()
    with storage_errors():
        if hasattr(storage, "bucket_name"):
            storage.connection.meta.client.head_bucket(Bucket=storage.bucket_name)
            return
    location = Path(storage.location)
    try:
        location.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageUnavailable(f"The artifact folder cannot be created: {exc.strerror}.", reason="error") from exc
    if not os.access(location, os.W_OK | os.X_OK):
        raise StorageUnavailable("The artifact folder is not writable.", reason="error")


class _UploadedBlob(File):
    """A finished upload on local disk. Exposing its path lets
    FileSystemStorage move it into place (a rename) instead of copying it;
    remote storages stream it."""

    def __init__(self, handle, path: Path, name: str):
        super().__init__(handle, name=name)
        self._path = path

    def temporary_file_path(self) -> str:
        return str(self._path)


def store_blob(local_path: Path, key: str) -> bool:
    """Move a finished upload into the artifact store under `key`. Returns
    False when an identical blob is already there (same digest, same bytes)."""
    storage = artifact_storage()
    with storage_errors():
        if storage.exists(key):
            return False
        with open(local_path, "rb") as handle:
            saved = storage.save(key, _UploadedBlob(handle, local_path, key))
        if saved != key:
            # A concurrent upload of the same bytes won the race; keep one copy.
            storage.delete(saved)
            return False
    return True


def delete_blob(key: str) -> None:
    with storage_errors():
        artifact_storage().delete(key)


def blob_exists(key: str) -> bool:
    with storage_errors():
        return artifact_storage().exists(key)


def read_blob(key: str) -> bytes:
    """A small stored file whole (a dataset for a page's preview, a dossier)."""
    with storage_errors(), artifact_storage().open(key, "rb") as handle:
        return handle.read()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_blob(key: str, destination: Path) -> None:
    """Copy a stored file to local disk: S3 in parallel ranged parts straight
    into the file; any other storage through its file API."""
    storage = artifact_storage()
    with storage_errors():
        if hasattr(storage, "bucket"):
            with open(destination, "wb") as sink:
                storage.bucket.Object(storage._normalize_name(key)).download_fileobj(sink)
            return
        with storage.open(key, "rb") as source, open(destination, "wb") as sink:
            shutil.copyfileobj(source, sink, 1024 * 1024)


# Digests this process refused lately: refused again at once, without another
# download or another audit event per request, until the window passes (a
# restored object is then fetched and checked afresh).
_REFUSED_SECONDS = 60
_recently_refused: dict[str, float] = {}
_refused_lock = threading.Lock()


def _refused_lately(sha256: str) -> bool:
    with _refused_lock:
        at = _recently_refused.get(sha256)
        return at is not None and time.monotonic() - at < _REFUSED_SECONDS


def fetch_verified(*, key: str, sha256: str, destination: Path, kind: str) -> None:
    """Download `key` to `destination` and prove it hashes to `sha256`. On a
    mismatch the file is deleted, the refusal is announced (registry.signals:
    an audit event, an alert) and ArtifactIntegrityError raised: nothing
    unverified is ever handed to a loader."""
    from registry.signals import artifact_refused, artifact_verified

    what = "dataset" if kind == "datasets" else "artifact"
    if _refused_lately(sha256):
        raise ArtifactIntegrityError(f"The stored {what} {key} does not match its SHA-256; it is not loaded.")
    _fetch_blob(key, destination)
    found = file_sha256(destination)
    if found != sha256:
        destination.unlink(missing_ok=True)
        with _refused_lock:
            _recently_refused[sha256] = time.monotonic()
        logger.error("refused %s: SHA-256 %s, registered as %s", key, found, sha256)
        artifact_refused.send(sender=kind, key=key, sha256=sha256, found=found)
        raise ArtifactIntegrityError(
            f"The stored {what} {key} has SHA-256 {found[:16]}…, registered as {sha256[:16]}…; it is not loaded."
        )
    with _refused_lock:
        _recently_refused.pop(sha256, None)
    artifact_verified.send(sender=kind, key=key, sha256=sha256)


def cache_dir() -> Path:
    path = Path(settings.ARTIFACT_CACHE_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(4)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    # torch.save writes a zip whose payload is data.pkl.
    if head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as inner:
                return any(name.endswith(".pkl") for name in inner.namelist())
        except zipfile.BadZipFile:
            return False
    return False


@dataclass
class PreparedArtifact:
    """An upload that passed every check, unpacked in a staging folder."""

    fmt: str
    members: list[ArchiveMember]
    staging_dir: Path
    labels: list[str]
    max_length: int | None
    # The flavor it loads as (read from MLmodel when the upload said "mlflow").
    flavor: str = ""
    # What MLmodel said, for an MLflow model directory.
    mlflow: MlflowModel | None = None

    def discard(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)


def prepare_artifact(upload_path: Path, flavor: str, *, sha256: str = "") -> PreparedArtifact:
    """Check the archive, unpack it into staging, check the flavor's files, and
    prove the model loads and answers (in a child process). Raises
    InvalidInput and leaves nothing behind on any failure. With the upload's
    `sha256`, a digest that already passed the load check in this process
    is not loaded again (every other check still runs). `flavor` may be
    "mlflow": an MLflow model directory, whose MLmodel names the flavor."""
    limits = ArchiveLimits.from_settings()
    fmt, members = inspect_archive(upload_path, limits)
    names = {member.name for member in members}
    mlflow_root = find_mlmodel_root(names)
    if flavor == MLFLOW_UPLOAD_FLAVOR and mlflow_root is None:
        raise InvalidInput(
            "flavor=mlflow needs an MLflow model directory: an MLmodel file at the archive's root "
            "or in its single top-level folder."
        )
    staging = cache_dir() / f".staging-{uuid.uuid4().hex}"
    mlflow = None
    try:
        if mlflow_root is not None:
            extract_archive(upload_path, staging, limits)
            mlflow = read_mlflow_model(staging, mlflow_root, names)
            if flavor not in (MLFLOW_UPLOAD_FLAVOR, mlflow.flavor):
                raise InvalidInput(
                    f"The upload says flavor={flavor}, but its MLmodel is of the {mlflow.flavor} flavor "
                    f"(send flavor={mlflow.flavor} or flavor=mlflow)."
                )
            flavor = mlflow.flavor
            arrange_for_loading(staging, mlflow)
            names = _files_under(staging)
        elif flavor == "sklearn" and fmt == ZIP and SKOPS_SCHEMA_MEMBER in names:
            # A .skops file is itself a zip: keep it whole, skops reads it.
            staging.mkdir()
            shutil.copyfile(upload_path, staging / "model.skops")
            # Its members are skops's own (.npy read with allow_pickle=False).
            names = {"model.skops"}
        else:
            extract_archive(upload_path, staging, limits)
        _check_flavor_files(staging, flavor, names)
        labels, max_length = _load_check_once(staging, flavor, sha256)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PreparedArtifact(fmt, members, staging, labels, max_length, flavor=flavor, mlflow=mlflow)


def _files_under(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


def _check_flavor_files(staging: Path, flavor: str, names: set[str]) -> None:
    for name in sorted(names):
        if name.lower().endswith(PICKLE_SUFFIXES):
            raise InvalidInput(
                f"{name!r} is a pickle-based format; Glassbox never loads pickles. Use safetensors or skops."
            )
    for path in staging.rglob("*"):
        # safetensors and skops have their own parsers that refuse anything
        # else (and a safetensors header length can start like a pickle).
        if path.is_file() and not path.name.endswith((".skops", ".safetensors")) and _looks_like_pickle(path):
            raise InvalidInput(f"{path.relative_to(staging)} contains pickle data; Glassbox never loads pickles.")
    for name in sorted(names):
        if name.lower().endswith(CODE_SUFFIXES):
            raise InvalidInput(f"{name!r} is Python code; Glassbox never runs code from an artifact.")
    if flavor == "transformers":
        for name in sorted(names):
            if name.lower().endswith(CONFIG_SUFFIX) and _has_auto_map(staging / name, name):
                raise InvalidInput(
                    f"{name!r} has an auto_map entry (custom model code); Glassbox never runs code from an artifact."
                )
        if "config.json" not in names:
            raise InvalidInput("A transformers artifact needs config.json at the archive root.")
        if not any(name.endswith(".safetensors") for name in names):
            raise InvalidInput("A transformers artifact needs its weights as *.safetensors.")
    elif flavor == "sklearn":
        skops_files = [name for name in names if name.endswith(".skops")] or (
            ["model.skops"] if (staging / "model.skops").exists() else []
        )
        if len(skops_files) != 1:
            raise InvalidInput("A sklearn artifact is one .skops file (or an archive holding exactly one).")
    else:
        raise InvalidInput(f"Unknown flavor {flavor!r}.")


def _has_auto_map(path: Path, name: str) -> bool:
    """Whether a JSON config holds an `auto_map` key at any depth (composite
    models nest their sub-models' configs). A config that cannot be read as
    JSON is refused too: nothing unchecked gets through."""
    if path.stat().st_size > _CONFIG_MAX_BYTES:
        raise InvalidInput(f"{name!r} is larger than {_CONFIG_MAX_BYTES} bytes; a model config is not.")
    try:
        config = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{name!r} is not valid JSON.") from exc
    pending = [config]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "auto_map" in node:
                return True
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return False


# (sha256, flavor) -> what the load check found. Artifacts are immutable and
# the check depends only on their bytes, so a passed check holds for every
# later upload of the same bytes (another model's version, a retry, and the
# test suite, which uploads the same demo models hundreds of times). Failures
# are never remembered. Small: one entry per distinct artifact.
_passed_load_checks: dict[tuple[str, str], tuple[list[str], int | None]] = {}
_PASSED_LOAD_CHECKS_MAX = 256


def _load_check_once(staging: Path, flavor: str, sha256: str) -> tuple[list[str], int | None]:
    if sha256 and (sha256, flavor) in _passed_load_checks:
        labels, max_length = _passed_load_checks[(sha256, flavor)]
        return list(labels), max_length
    labels, max_length = _load_check(staging, flavor)
    if sha256:
        if len(_passed_load_checks) >= _PASSED_LOAD_CHECKS_MAX:
            _passed_load_checks.clear()
        _passed_load_checks[(sha256, flavor)] = (list(labels), max_length)
    return labels, max_length


def _load_check(staging: Path, flavor: str) -> tuple[list[str], int | None]:
    """Load the model in a child process: a hostile or broken artifact can
    neither crash nor bloat the web server, which never imports torch."""
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "registry.load_check", str(staging), flavor],
            capture_output=True,
            text=True,
            timeout=settings.GLASSBOX_LOAD_CHECK_TIMEOUT,
            cwd=settings.BASE_DIR,
            env={**os.environ, "PYTHONPATH": str(settings.BASE_DIR)},
        )
    except subprocess.TimeoutExpired as exc:
        raise InvalidInput("The model did not load within the time limit.") from exc
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise InvalidInput(f"The model failed to load: {tail[0][:300]}")
    result = json.loads(lines[-1])
    if not result.get("ok"):
        raise InvalidInput(result.get("detail") or "The model failed to load.")
    return [str(label) for label in result["labels"]], result.get("max_length")


def install_prepared(prepared: PreparedArtifact, sha256: str) -> Path:
    """Move the staging folder to its place in the local cache."""
    target = cache_dir() / sha256
    if target.exists():
        prepared.discard()
    else:
        try:
            os.replace(prepared.staging_dir, target)
        except OSError:
            prepared.discard()
    return target


def local_model_path(*, sha256: str, artifact_key: str, flavor: str) -> Path:
    """The unpacked model on this machine. On first use it is fetched from the
    store, its SHA-256 checked against the registered digest, then checked as
    an archive again and unpacked; only a verified copy enters the cache."""
    target = cache_dir() / sha256
    if target.exists():
        return target
    staging = cache_dir() / f".fetch-{uuid.uuid4().hex}"
    downloaded = cache_dir() / f".fetch-{uuid.uuid4().hex}.blob"
    try:
        fetch_verified(key=artifact_key, sha256=sha256, destination=downloaded, kind="models")
        limits = ArchiveLimits.from_settings()
        fmt, members = inspect_archive(downloaded, limits)
        names = {m.name for m in members}
        mlflow_root = find_mlmodel_root(names)
        if mlflow_root is not None:
            # The same reading as at upload (the bytes decide), then the same layout.
            extract_archive(downloaded, staging, limits)
            arrange_for_loading(staging, read_mlflow_model(staging, mlflow_root, names))
        elif flavor == "sklearn" and fmt == ZIP and SKOPS_SCHEMA_MEMBER in names:
            staging.mkdir()
            os.replace(downloaded, staging / "model.skops")
        else:
            extract_archive(downloaded, staging, limits)
        try:
            os.replace(staging, target)
        except OSError:
            pass  # another process unpacked it first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if downloaded.exists():
            downloaded.unlink()
    return target


def local_dataset_path(*, sha256: str, storage_key: str) -> Path:
    """A dataset file on this machine, fetched and verified like a model."""
    folder = cache_dir() / "datasets"
    folder.mkdir(exist_ok=True)
    target = folder / sha256
    if target.exists():
        return target
    downloaded = folder / f".fetch-{uuid.uuid4().hex}"
    try:
        fetch_verified(key=storage_key, sha256=sha256, destination=downloaded, kind="datasets")
        os.replace(downloaded, target)
    finally:
        downloaded.unlink(missing_ok=True)
    return target
