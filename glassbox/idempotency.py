"""`Idempotency-Key` on the POSTs that start work (uploads, reports,
rollouts): a client that retries after a timeout or a dropped connection
sends the same key, and gets the first answer back (same status, same body,
header `Idempotent-Replayed: true`) instead of a second upload, report or
rollout.

- Same key, another body (or endpoint): 409 `idempotency_conflict`.
- Same key while the first request is still running: 409
  `idempotency_in_progress` (the unique constraint on (user, key) lets one
  of two concurrent duplicates in; the other is refused, not run).
- Only a successful (2xx) answer is remembered: an error frees the key, so a
  corrected retry with it runs.
- A key is remembered for GLASSBOX_IDEMPOTENCY_TTL_HOURS (default 24 h).

The fingerprint is the SHA-256 of the method, the path and the parsed body
(JSON or form fields in canonical JSON; a file by the SHA-256 the upload
handler computed while streaming it to disk), so the body is read once."""

import functools
import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from glassbox.errors import Conflict, InvalidInput

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 200

# For each view's extend_schema(parameters=[...]).
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    HEADER,
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="a unique string per operation (e.g. a UUID): a retry with the same key and body returns the "
    f"first answer (header {REPLAYED_HEADER}: true) and starts nothing new; the same key with another body "
    "answers 409 idempotency_conflict",
)


def _file_digest(uploaded) -> str:
    digest = getattr(uploaded, "sha256", None)
    if digest:
        return digest
    hasher = hashlib.sha256()
    for chunk in uploaded.chunks():
        hasher.update(chunk)
    uploaded.seek(0)
    return hasher.hexdigest()


def request_fingerprint(request) -> str:
    data = request.data
    if hasattr(data, "getlist"):  # a QueryDict: form fields and files
        fields = {name: data.getlist(name) for name in data}
    else:
        fields = data
    files = {name: [_file_digest(f) for f in request.FILES.getlist(name)] for name in request.FILES}
    if files and isinstance(fields, dict):
        fields = {name: value for name, value in fields.items() if name not in files}
    canonical = json.dumps(
        {"method": request.method, "path": request.path, "body": fields, "files": files},
        sort_keys=True,
        default=str,
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _checked_key(raw: str) -> str:
    key = raw.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise InvalidInput(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters (a UUID, say).",
            code="invalid_idempotency_key",
        )
    return key


def purge_expired_records() -> int:
    """Forget every key older than the TTL (beat, hourly: a user who never
    sends another key would otherwise keep their rows forever). Returns how
    many went."""
    from glassbox.models import IdempotencyRecord

    expired_before = timezone.now() - timedelta(hours=settings.GLASSBOX_IDEMPOTENCY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=expired_before).delete()
    return deleted


def _claim(*, user, key: str, endpoint: str, fingerprint: str):
    """The new record of this key (the caller runs the request), or the
    response to replay. Raises Conflict for another body or one in flight."""
    from glassbox.models import IdempotencyRecord

    expired_before = timezone.now() - timedelta(hours=settings.GLASSBOX_IDEMPOTENCY_TTL_HOURS)
    # Forget this user's expired keys: they may start new work.
    IdempotencyRecord.objects.filter(user=user, created_at__lt=expired_before).delete()
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(
                user=user, key=key, endpoint=endpoint[:400], fingerprint=fingerprint
            )
        return record, None
    except IntegrityError:
        pass
    existing = IdempotencyRecord.objects.filter(user=user, key=key).first()
    if existing is None:
        # The first request failed and freed the key just now: ask the client to retry.
        raise Conflict("A request with this Idempotency-Key just finished; retry.", code="idempotency_in_progress")
    if existing.fingerprint != fingerprint or existing.endpoint != endpoint[:400]:
        raise Conflict(
            f"This {HEADER} was used for a different request ({existing.endpoint}, another body); "
            "use a new key for a new request.",
            code="idempotency_conflict",
        )
    if existing.response_status is None:
        raise Conflict(
            f"A request with this {HEADER} is still running; retry once it has answered.",
            code="idempotency_in_progress",
        )
    replay = Response(existing.response_body, status=existing.response_status)
    replay[REPLAYED_HEADER] = "true"
    return None, replay


def idempotent(handler):
    """Decorate an APIView's post(): honour an Idempotency-Key header."""

    @functools.wraps(handler)
    def wrapper(view, request, *args, **kwargs):
        raw = request.headers.get(HEADER)
        if raw is None:
            return handler(view, request, *args, **kwargs)
        key = _checked_key(raw)
        endpoint = f"{request.method} {request.path}"
        record, replay = _claim(user=request.user, key=key, endpoint=endpoint, fingerprint=request_fingerprint(request))
        if replay is not None:
            return replay
        try:
            response = handler(view, request, *args, **kwargs)
        except BaseException:
            record.delete()
            raise
        rendered = JSONRenderer().render(response.data) if response.data is not None else b""
        # jsonb cannot hold \u0000: such an answer is simply not remembered.
        if 200 <= response.status_code < 300 and rendered and b"\\u0000" not in rendered:
            # Stored as rendered: what a replay sends is the same JSON.
            record.response_status = response.status_code
            record.response_body = json.loads(rendered)
            record.save(update_fields=["response_status", "response_body"])
        else:
            record.delete()
        return response

    return wrapper
