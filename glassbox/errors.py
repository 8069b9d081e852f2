"""Errors that services raise; the API turns them into 4xx JSON and the pages
into form errors. Services never return HTTP objects.

Every error carries a machine-readable `code` (a stable snake_case string,
listed in the README's "Error codes" table): a raise site names a specific
one (`Conflict(..., code="model_archived")`), otherwise the class's
`default_code` applies."""


class GlassboxError(Exception):
    status_code = 400
    default_code = "invalid_input"

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.message = message
        self.code = str(extra.pop("code", None) or self.default_code)
        self.extra = extra


class InvalidInput(GlassboxError):
    status_code = 400
    default_code = "invalid_input"


class NotPermitted(GlassboxError):
    status_code = 403
    default_code = "permission_denied"


class NotFound(GlassboxError):
    status_code = 404
    default_code = "not_found"


class Conflict(GlassboxError):
    """A move the object's current state does not allow."""

    status_code = 409
    default_code = "invalid_transition"


class TooLarge(GlassboxError):
    status_code = 413
    default_code = "too_large"


class StorageUnavailable(GlassboxError, OSError):
    """The artifact store cannot be reached or refuses us (no bucket, wrong
    credentials). Transient for the caller: the API answers 503, and Celery
    tasks (which retry on OSError) try again."""

    status_code = 503

    def __init__(self, message: str, **extra):
        super().__init__(message, **{"code": "storage_unavailable", **extra})


class ArtifactIntegrityError(GlassboxError):
    """A stored artifact or dataset no longer hashes to the digest it was
    registered under. It is never loaded; not a retryable fault."""

    status_code = 503

    def __init__(self, message: str, **extra):
        super().__init__(message, **{"code": "artifact_integrity", **extra})
