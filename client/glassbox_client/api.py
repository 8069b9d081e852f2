"""`Glassbox(url, token)`: the platform's REST API as Python methods.

Lists are iterators over every page: a body `{"results": [...], "next": url}`
is followed link by link, a plain JSON array (servers before cursor
pagination) is taken whole. Errors raise subclasses of `GlassboxError`
(glassbox_client/errors.py) with the server's `detail` and `code`."""

from __future__ import annotations

import hashlib
import html
import json as jsonlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from . import __version__
from .errors import (
    ApiError,
    GlassboxError,
    LocalInputError,
    PendingReview,
    ReportFailed,
    RolloutAborted,
    ServerError,
    ServerTimeout,
    ServerUnreachable,
    UnexpectedAnswer,
    VersionRejected,
    WaitTimeout,
    api_error_class,
)
from .multipart import MultipartFileBody, ProgressCallback
from .objects import (
    AuditEvent,
    Dataset,
    Decision,
    FeedbackResult,
    Model,
    Prediction,
    Report,
    ReviewState,
    Rollout,
    ServingState,
    Version,
)

DEFAULT_TIMEOUT = 60.0
# After the last byte of an upload the server checks the archive and loads the
# model once (GLASSBOX_LOAD_CHECK_TIMEOUT, 10 minutes by default) before it answers.
UPLOAD_ANSWER_TIMEOUT = 900.0
CONNECT_TIMEOUT = 10.0
# Polls that meet a passing outage (a restart, 503 while the database fails over) keep going.
TRANSIENT_POLL_FAILURES = 5


class _LargeBlockAdapter(HTTPAdapter):
    """urllib3 sends a streamed body in 16 KiB blocks; 1 MiB blocks keep a
    large upload from spending its time in Python calls."""

    def init_poolmanager(self, *args, **kwargs):
        kwargs.setdefault("blocksize", 1 << 20)
        super().init_poolmanager(*args, **kwargs)


def _error_text(body: Any) -> tuple[str | None, str | None]:
    if isinstance(body, dict):
        detail = body.get("detail")
        code = body.get("code")
        if detail is not None and not isinstance(detail, str):
            detail = jsonlib.dumps(detail, ensure_ascii=False)
        return detail, code if isinstance(code, str) else None
    return None, None


def _page_title(text: str) -> str:
    match = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    if not match:
        match = re.search(r"<h1[^>]*>(.*?)</h1>", text, re.IGNORECASE | re.DOTALL)
    if match:
        return " ".join(html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).split())[:120]
    return " ".join(re.sub(r"<[^>]+>", " ", text).split())[:120]


def _connection_reason(exc: Exception) -> str:
    text = str(exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
        ("getaddrinfo failed", "unknown host"),
        ("Temporary failure in name resolution", "unknown host"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
        ("Connection reset", "the connection was reset"),
        ("RemoteDisconnected", "the server closed the connection without answering"),
        ("Connection aborted", "the server closed the connection without answering"),
        ("CERTIFICATE_VERIFY_FAILED", "its TLS certificate is not trusted"),
    ):
        if needle in text:
            return reason
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


class Glassbox:
    """A signed-in connection to one Glassbox server.

    >>> gb = Glassbox("http://localhost:8000", token)
    >>> for model in gb.models(): print(model.name, model.risk_tier)
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ):
        if not re.match(r"^https?://[^/]", url or ""):
            raise LocalInputError(f"The server URL must start with http:// or https:// (got {url!r}).")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        if session is None:
            session = requests.Session()
            adapter = _LargeBlockAdapter()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session
        self.session.headers["User-Agent"] = f"glassbox-client/{__version__}"
        self.session.headers["Accept"] = "application/json"

    def __repr__(self) -> str:
        return f"Glassbox({self.url!r})"

    # --- authentication ---------------------------------------------------------------

    @classmethod
    def from_password(cls, url: str, username: str, password: str, **kwargs) -> Glassbox:
        """Sign in with a username and password (`POST /api/v1/auth/token/`)."""
        client = cls(url, None, **kwargs)
        body = client._request("POST", "/api/v1/auth/token/", json={"username": username, "password": password})
        client.token = body["token"]
        return client

    # --- transport ----------------------------------------------------------------------

    def _headers(self, extra: dict | None = None) -> dict:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        return headers

    def _path_of(self, link: str) -> str:
        """The path and query of a `next` link, sent to this client's own URL:
        a server behind a proxy may build links with its inner address, and
        the token never goes to a host the user did not name."""
        parts = urlsplit(link)
        path = parts.path
        prefix = urlsplit(self.url).path.rstrip("/")
        if prefix and path.startswith(prefix + "/"):
            path = path[len(prefix) :]
        return path + (f"?{parts.query}" if parts.query else "")

    def _send(self, method: str, path: str, *, timeout=None, **kwargs) -> requests.Response:
        url = self.url + path
        try:
            return self.session.request(
                method,
                url,
                timeout=timeout or (CONNECT_TIMEOUT, self.timeout),
                allow_redirects=False,
                **kwargs,
            )
        except requests.exceptions.ConnectTimeout as exc:
            raise ServerUnreachable(
                f"cannot reach {self.url}: no connection within {CONNECT_TIMEOUT:g} s (a firewall, or the wrong address?)",
                url=url,
            ) from exc
        except requests.exceptions.Timeout as exc:
            seconds = (timeout or (CONNECT_TIMEOUT, self.timeout))[-1]
            raise ServerTimeout(
                f"{self.url} did not answer within {seconds:g} s ({method} {path}); it may be overloaded",
                url=url,
            ) from exc
        except requests.exceptions.SSLError as exc:
            raise ServerUnreachable(f"cannot reach {self.url}: {_connection_reason(exc)}", url=url) from exc
        except requests.exceptions.ConnectionError as exc:
            raise ServerUnreachable(
                f"cannot reach {self.url}: {_connection_reason(exc)} (is the server running at this address?)",
                url=url,
            ) from exc
        except requests.exceptions.InvalidURL as exc:
            raise LocalInputError(f"invalid server URL {self.url!r}: {exc}") from exc
        except requests.exceptions.RequestException as exc:
            # A broken answer (cut short, undecodable): one line, like the rest.
            raise UnexpectedAnswer(
                f"{self.url} gave a broken answer to {method} {path}: {_connection_reason(exc)}"
            ) from exc

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict | None = None,
        headers: dict | None = None,
        data: Any = None,
        timeout=None,
        raw: bool = False,
    ) -> Any:
        """One call; the decoded JSON answer (or the response itself with raw=True).
        A GET answered 503 with Retry-After (the database failing over) is tried again."""
        if params:
            params = {key: value for key, value in params.items() if value is not None}
        for attempt in range(3):
            response = self._send(
                method, path, json=json, params=params, data=data, headers=self._headers(headers), timeout=timeout
            )
            retry_after = response.headers.get("Retry-After", "")
            if method == "GET" and response.status_code == 503 and retry_after.isdigit() and attempt < 2:
                time.sleep(min(int(retry_after), 10))
                continue
            break
        return self._answer(method, path, response, raw=raw)

    def _answer(self, method: str, path: str, response: requests.Response, *, raw: bool) -> Any:
        status = response.status_code
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        is_json = content_type == "application/json" or content_type.endswith("+json")
        where = f"{method} {path.split('?')[0]}"
        if 300 <= status < 400:
            location = response.headers.get("Location", "?")
            raise UnexpectedAnswer(
                f"{self.url} redirected {where} to {location}: use the address it redirects to "
                "(glassbox login --url ...)",
                status=status,
                url=response.url,
            )
        if status >= 400:
            body = None
            if is_json:
                try:
                    body = response.json()
                except ValueError:
                    body = None
            detail, code = _error_text(body)
            if detail is None:
                # Not the API's JSON: a proxy's error page, a load balancer, another service.
                kind = "an HTML page" if "html" in content_type else f"a {content_type or 'body'} answer"
                snippet = _page_title(response.text) if response.text else response.reason
                raise UnexpectedAnswer(
                    f"{self.url} answered {where} with HTTP {status} and {kind}, not the Glassbox API"
                    f" ({snippet or response.reason}); is a proxy in front of it down?",
                    status=status,
                    url=response.url,
                )
            cls = api_error_class(status)
            suffix = f" [{code}]" if code else ""
            raise cls(f"{detail}{suffix} (HTTP {status})", status=status, detail=detail, code=code, body=body)
        if raw:
            return response
        if status == 204 or not response.content:
            return None
        if not is_json:
            snippet = _page_title(response.text)
            raise UnexpectedAnswer(
                f"{self.url} answered {where} with {content_type or 'no content type'}, not the Glassbox API's "
                f"JSON ({snippet}); is the URL the Glassbox server?",
                status=status,
                url=response.url,
            )
        try:
            return response.json()
        except ValueError as exc:
            raise UnexpectedAnswer(f"{self.url} answered {where} with malformed JSON", status=status) from exc

    def _pages(self, path: str, params: dict | None = None) -> Iterator[dict]:
        body = self._request("GET", path, params=params)
        while True:
            if isinstance(body, list):
                yield from body
                return
            if not isinstance(body, dict) or not isinstance(body.get("results"), list):
                raise UnexpectedAnswer(f"{self.url} answered GET {path} with neither a list nor a page of results")
            yield from body["results"]
            link = body.get("next")
            if not link:
                return
            body = self._request("GET", self._path_of(link))

    @staticmethod
    def _work_headers(idempotency_key: str | None) -> dict:
        # A retried POST that starts work (an upload, a report, a rollout) with the
        # same key gets the first answer from a server that keeps keys; others ignore it.
        return {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}

    # --- models and versions ----------------------------------------------------------

    def models(self, *, page_size: int | None = None) -> Iterator[Model]:
        for item in self._pages("/api/v1/models/", {"page_size": page_size}):
            yield Model.from_api(item)

    def model(self, name: str) -> Model:
        """One model with its versions."""
        return Model.from_api(self._request("GET", f"/api/v1/models/{name}/"))

    def model_create(
        self,
        name: str,
        *,
        risk_tier: str,
        task: str = "text-classification",
        description: str = "",
        team: str | None = None,
    ) -> Model:
        body = {"name": name, "task": task, "risk_tier": risk_tier, "description": description}
        if team:
            body["team"] = team
        return Model.from_api(self._request("POST", "/api/v1/models/", json=body))

    def versions(self, model: str, *, page_size: int | None = None) -> Iterator[Version]:
        for item in self._pages(f"/api/v1/models/{model}/versions/", {"page_size": page_size}):
            yield Version.from_api(item)

    def version(self, model: str, version: int) -> Version:
        return Version.from_api(self._request("GET", f"/api/v1/models/{model}/versions/{int(version)}/"))

    def upload(
        self,
        model: str,
        path: str | os.PathLike,
        *,
        flavor: str,
        metrics: dict | None = None,
        description: str = "",
        intended_use: str = "",
        limitations: str = "",
        training_data: str = "",
        evaluation_data: str = "",
        progress: ProgressCallback | None = None,
        idempotency_key: str | None = None,
    ) -> Version:
        """Upload an artifact (zip / tar / tar.gz of a transformers model, or a
        .skops file) as a new version. The file is streamed from disk;
        `progress(sent_bytes, total_bytes)` is called as it goes."""
        fields = {"flavor": flavor}
        if metrics is not None:
            fields["metrics"] = jsonlib.dumps(metrics)
        card = {
            "description": description,
            "intended_use": intended_use,
            "limitations": limitations,
            "training_data": training_data,
            "evaluation_data": evaluation_data,
        }
        fields.update({name: value for name, value in card.items() if value})
        url_path = f"/api/v1/models/{model}/versions/"
        return Version.from_api(self._upload(url_path, fields, "artifact", path, progress, idempotency_key))

    def _upload(
        self,
        url_path: str,
        fields: dict,
        file_field: str,
        path: str | os.PathLike,
        progress: ProgressCallback | None,
        idempotency_key: str | None,
    ) -> Any:
        headers = self._work_headers(idempotency_key)
        # The boundary follows from the key: a retry with the same key sends the
        # very same bytes, which a server comparing request bodies recognises.
        boundary = "glassbox-" + hashlib.sha256(headers["Idempotency-Key"].encode()).hexdigest()[:32]
        body = MultipartFileBody(fields, file_field=file_field, path=path, progress=progress, boundary=boundary)
        headers["Content-Type"] = body.content_type
        try:
            return self._request(
                "POST",
                url_path,
                data=body,
                headers=headers,
                timeout=(CONNECT_TIMEOUT, max(self.timeout, UPLOAD_ANSWER_TIMEOUT)),
            )
        except ServerUnreachable as exc:
            if 0 < body.sent < body.length:
                # The server stopped reading part-way: it refused the body (size, say)
                # and closed the connection before its answer could be read.
                raise ServerUnreachable(
                    f"{self.url} closed the connection after {body.sent} of {body.length} bytes of the upload"
                    " (over its upload limit, or restarted?)",
                    url=exc.url,
                ) from exc
            raise
        finally:
            body.close()

    # --- datasets -----------------------------------------------------------------------

    def datasets(self, *, page_size: int | None = None) -> Iterator[Dataset]:
        for item in self._pages("/api/v1/datasets/", {"page_size": page_size}):
            yield Dataset.from_api(item)

    def dataset_upload(
        self,
        path: str | os.PathLike,
        *,
        name: str,
        description: str = "",
        progress: ProgressCallback | None = None,
        idempotency_key: str | None = None,
    ) -> Dataset:
        """Upload an evaluation set: CSV or JSON lines with the columns text and label (UTF-8)."""
        fields = {"name": name, "description": description}
        return Dataset.from_api(self._upload("/api/v1/datasets/", fields, "file", path, progress, idempotency_key))

    # --- reviews ------------------------------------------------------------------------

    def submit(self, model: str, version: int) -> ReviewState:
        """Open the review of a registered version."""
        return ReviewState.from_api(self._request("POST", f"/api/v1/models/{model}/versions/{int(version)}/submit/"))

    def decide(self, model: str, version: int, decision: str, comment: str = "") -> Decision:
        """Record a reviewer's decision: "approve" or "reject" (a rejection needs a comment)."""
        body = {"decision": decision, "comment": comment}
        path = f"/api/v1/models/{model}/versions/{int(version)}/decisions/"
        return Decision.from_api(self._request("POST", path, json=body))

    def approve(self, model: str, version: int, comment: str = "") -> Decision:
        return self.decide(model, version, "approve", comment)

    def reject(self, model: str, version: int, comment: str) -> Decision:
        return self.decide(model, version, "reject", comment)

    def review_wait(
        self,
        model: str,
        version: int,
        *,
        timeout: float | None = None,
        poll_interval: float = 5.0,
        on_change: Callable[[Version], None] | None = None,
    ) -> Version:
        """Wait until the version's review closes. Returns the approved version;
        raises VersionRejected, or PendingReview when `timeout` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        for current in self._poll(lambda: self.version(model, version), poll_interval, deadline):
            state = (current.status, current.review.approvals if current.review else 0)
            if state != last and on_change is not None:
                on_change(current)
            last = state
            review_open = current.review is not None and current.review.status == "open"
            if current.status == "rejected":
                raise VersionRejected(f"{model} v{version} was rejected", status=None)
            if current.status == "in_review" or review_open:
                continue
            if current.status in ("approved", "deployed", "retired"):
                return current
            if current.status == "registered":
                raise PendingReview(f"{model} v{version} has not been submitted for review (glassbox submit)")
        raise PendingReview(f"{model} v{version} is still waiting for reviewers")

    # --- explanation reports -------------------------------------------------------------

    def report_request(
        self,
        model: str,
        version: int,
        *,
        method: str,
        dataset: int | None = None,
        texts: list[str] | None = None,
        params: dict | None = None,
        sample: dict | int | None = None,
        idempotency_key: str | None = None,
    ) -> Report:
        """Queue an explanation report (202); `sample=n` draws n texts stratified by label."""
        body: dict[str, Any] = {"method": method, "params": params or {}}
        if dataset is not None:
            body["dataset"] = int(dataset)
        if texts is not None:
            body["texts"] = list(texts)
        if sample is not None:
            body["sample"] = {"n": sample, "seed": 0} if isinstance(sample, int) else sample
        path = f"/api/v1/models/{model}/versions/{int(version)}/explanations/"
        return Report.from_api(self._request("POST", path, json=body, headers=self._work_headers(idempotency_key)))

    def report_estimate(self, model: str, version: int, *, method: str, **kwargs) -> dict:
        body = {"method": method, **{key: value for key, value in kwargs.items() if value is not None}}
        return self._request(
            "POST", f"/api/v1/models/{model}/versions/{int(version)}/explanations/estimate/", json=body
        )

    def reports(self, model: str, version: int) -> Iterator[Report]:
        for item in self._pages(f"/api/v1/models/{model}/versions/{int(version)}/explanations/"):
            yield Report.from_api(item)

    def report(self, report_id: int) -> Report:
        return Report.from_api(self._request("GET", f"/api/v1/explanations/{int(report_id)}/"))

    def report_cancel(self, report_id: int) -> Report:
        return Report.from_api(self._request("POST", f"/api/v1/explanations/{int(report_id)}/cancel/"))

    def report_wait(
        self,
        report_id: int,
        *,
        progress: Callable[[Report], None] | None = None,
        poll_interval: float = 1.0,
        timeout: float | None = None,
    ) -> Report:
        """Poll until the report finishes; `progress(report)` after each poll.
        Returns the succeeded report; raises ReportFailed (failed or cancelled)
        or WaitTimeout (the report goes on on the server)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for report in self._poll(lambda: self.report(report_id), poll_interval, deadline):
            if progress is not None:
                progress(report)
            if report.succeeded:
                return report
            if report.finished:
                reason = f": {report.error}" if report.error else ""
                raise ReportFailed(f"report #{report.id} {report.status}{reason}", report=report)
        raise WaitTimeout(
            f"report #{report_id} is still running after {timeout:g} s (glassbox report wait {report_id})"
        )

    def report_export(self, report_id: int, *, format: str = "json") -> bytes:
        """The succeeded report as a file: "json" or "csv" (per-token values)."""
        if format not in ("json", "csv"):
            raise LocalInputError(f"format must be json or csv (got {format!r})")
        response = self._request("GET", f"/api/v1/explanations/{int(report_id)}/export.{format}", raw=True)
        return response.content

    # --- rollouts and serving -------------------------------------------------------------

    def rollout_start(
        self,
        model: str,
        candidate: int,
        *,
        steps: list[dict] | None = None,
        thresholds: dict | None = None,
        analysis_interval_seconds: int | None = None,
        reference_dataset: int | None = None,
        idempotency_key: str | None = None,
    ) -> Rollout:
        body: dict[str, Any] = {"candidate": int(candidate)}
        for name, value in (
            ("steps", steps),
            ("thresholds", thresholds),
            ("analysis_interval_seconds", analysis_interval_seconds),
            ("reference_dataset", reference_dataset),
        ):
            if value is not None:
                body[name] = value
        path = f"/api/v1/models/{model}/rollouts/"
        return Rollout.from_api(self._request("POST", path, json=body, headers=self._work_headers(idempotency_key)))

    def rollouts(self, model: str, *, page_size: int | None = None) -> Iterator[Rollout]:
        """A model's rollouts, newest first."""
        for item in self._pages(f"/api/v1/models/{model}/rollouts/", {"page_size": page_size}):
            yield Rollout.from_api(item)

    def rollout(self, rollout_id: int) -> Rollout:
        return Rollout.from_api(self._request("GET", f"/api/v1/rollouts/{int(rollout_id)}/"))

    def rollout_latest(self, model: str) -> Rollout:
        for rollout in self.rollouts(model, page_size=1):
            return rollout
        raise GlassboxError(f"{model} has no rollouts yet")

    def rollout_watch(
        self, rollout_id: int, *, poll_interval: float = 2.0, timeout: float | None = None
    ) -> Iterator[Rollout]:
        """Yield the rollout each time its status, step or weight changes, until
        it is promoted (the generator ends) or aborted (RolloutAborted)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        for rollout in self._poll(lambda: self.rollout(rollout_id), poll_interval, deadline):
            state = (rollout.status, rollout.current_step, rollout.candidate_weight, len(rollout.analysis))
            if state != last:
                yield rollout
                last = state
            if rollout.status == "aborted":
                reason = f": {rollout.status_reason}" if rollout.status_reason else ""
                raise RolloutAborted(f"rollout #{rollout.id} was aborted{reason}", rollout=rollout)
            if rollout.finished:
                return
        raise WaitTimeout(f"rollout #{rollout_id} is still {last[0] if last else 'running'} after {timeout:g} s")

    def _rollout_action(self, rollout_id: int, action: str, body: dict) -> Rollout:
        return Rollout.from_api(self._request("POST", f"/api/v1/rollouts/{int(rollout_id)}/{action}/", json=body))

    def rollout_promote(self, rollout_id: int, *, step: bool = False, reason: str = "") -> Rollout:
        """Skip to the end and promote; `step=True` moves one step only."""
        body: dict[str, Any] = {"reason": reason}
        if step:
            body["step"] = "next"
        return self._rollout_action(rollout_id, "promote", body)

    def rollout_pause(self, rollout_id: int, *, reason: str = "") -> Rollout:
        return self._rollout_action(rollout_id, "pause", {"reason": reason})

    def rollout_resume(self, rollout_id: int) -> Rollout:
        return self._rollout_action(rollout_id, "resume", {})

    def rollout_abort(self, rollout_id: int, *, reason: str = "") -> Rollout:
        return self._rollout_action(rollout_id, "abort", {"reason": reason})

    def rollback(self, model: str, *, reason: str) -> ServingState:
        """Send all traffic back to the previous deployed version at once."""
        return ServingState.from_api(
            self._request("POST", f"/api/v1/models/{model}/rollback/", json={"reason": reason})
        )

    def predict(self, model: str, inputs: str | Iterable[str], *, key: str | None = None) -> list[Prediction]:
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        body: dict[str, Any] = {"inputs": texts}
        if key is not None:
            body["key"] = key
        answer = self._request("POST", f"/api/v1/models/{model}/predict/", json=body)
        return [Prediction.from_api(item) for item in answer["predictions"]]

    def feedback(self, model: str, labels: dict[str, str] | Iterable[tuple[str, str]]) -> FeedbackResult:
        """The true labels of earlier predictions: {prediction_id: label}."""
        pairs = labels.items() if isinstance(labels, dict) else labels
        items = [{"prediction_id": str(prediction_id), "label": label} for prediction_id, label in pairs]
        return FeedbackResult.from_api(
            self._request("POST", f"/api/v1/models/{model}/feedback/", json={"items": items})
        )

    # --- audit trail ------------------------------------------------------------------

    def audit_events(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        model: str | None = None,
        version: int | None = None,
        outcome: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[AuditEvent]:
        """Audit events, newest first, page after page (the endpoint's keyset
        `before` links). `since` / `until`: a date (whole day) or a UTC time."""
        params = {
            "from": since,
            "to": until,
            "actor": actor,
            "action": action,
            "model": model,
            "version": version,
            "outcome": outcome,
            "limit": page_size,
        }
        for item in self._pages("/api/v1/audit/events/", params):
            yield AuditEvent.from_api(item)

    # --- polling ------------------------------------------------------------------------

    def _poll(self, fetch: Callable[[], Any], interval: float, deadline: float | None) -> Iterator[Any]:
        """fetch() every `interval` seconds until the deadline; a passing outage
        (unreachable, 502-504) is waited out a few polls in a row."""
        failures = 0
        while True:
            try:
                value = fetch()
                failures = 0
            except (ServerUnreachable, ServerTimeout, ServerError, UnexpectedAnswer) as exc:
                transient = not isinstance(exc, ApiError) or (exc.status or 0) in (502, 503, 504)
                failures += 1
                if not transient or failures > TRANSIENT_POLL_FAILURES:
                    raise
                value = None
            if value is not None:
                yield value
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))
