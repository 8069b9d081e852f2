"""The objects the API returns, as frozen dataclasses. Each keeps the whole
answer in `raw` (fields a newer server adds are there before this client
knows their names); `*_at` fields are parsed to aware datetimes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")


def _parse_datetime(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return value
    try:
        # Python before 3.11 does not read a trailing Z.
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value


def build(cls: type[T], data: dict, **nested: Any) -> T:
    """`cls` from an API answer: known fields picked by name, the rest kept in `raw`."""
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if item.name == "raw":
            continue
        if item.name in nested:
            values[item.name] = nested[item.name]
        elif item.name in data:
            value = data[item.name]
            values[item.name] = _parse_datetime(value) if item.name.endswith("_at") else value
    return cls(**values, raw=data)


@dataclass(frozen=True)
class Decision:
    id: int
    reviewer: str
    decision: str
    comment: str = ""
    created_at: datetime | None = None
    version_status: str | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict) -> Decision:
        return build(cls, data)


@dataclass(frozen=True)
class Review:
    id: int
    status: str
    kind: str = ""
    opened_by: str = ""
    approvals: int = 0
    required_approvals: int = 0
    missing_evidence: list = field(default_factory=list)
    decisions: tuple[Decision, ...] = ()
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict | None) -> Review | None:
        if not data:
            return None
        decisions = tuple(Decision.from_api(item) for item in data.get("decisions") or ())
        return build(cls, data, decisions=decisions)


@dataclass(frozen=True)
class Version:
    model: str
    version: int
    status: str
    flavor: str = ""
    sha256: str = ""
    size: int = 0
    filename: str = ""
    labels: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)
    created_by: str = ""
    created_at: datetime | None = None
    review: Review | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict) -> Version:
        return build(cls, data, review=Review.from_api(data.get("review")))


@dataclass(frozen=True)
class ReviewState:
    """A version's state after a review write (submit)."""

    model: str
    version: int
    status: str
    review: Review | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict) -> ReviewState:
        return build(cls, data, review=Review.from_api(data.get("review")))


@dataclass(frozen=True)
class Model:
    name: str
    task: str = ""
    risk_tier: str = ""
    description: str = ""
    team: str | None = None
    created_by: str = ""
    created_at: datetime | None = None
    versions: tuple[Version, ...] = ()
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict) -> Model:
        return build(cls, data, versions=tuple(Version.from_api(item) for item in data.get("versions") or ()))


@dataclass(frozen=True)
class Dataset:
    id: int
    name: str
    description: str = ""
    format: str = ""
    sha256: str = ""
    size: int = 0
    row_count: int = 0
    labels: list = field(default_factory=list)
    created_by: str = ""
    created_at: datetime | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict) -> Dataset:
        return build(cls, data)


@dataclass(frozen=True)
class Report:
    id: int
    status: str
    model: str = ""
    version: int = 0
    method: str = ""
    dataset: int | None = None
    text_count: int = 0
    progress: int = 0
    params: dict = field(default_factory=dict)
    error: str = ""
    requested_by: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    estimate: dict | None = None
    remaining_seconds: int | None = None
    results: Any = None
    fidelity: Any = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    FINISHED = ("succeeded", "failed", "cancelled")

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @classmethod
    def from_api(cls, data: dict) -> Report:
        return build(cls, data)


@dataclass(frozen=True)
class Rollout:
    id: int
    model: str
    candidate: int
    status: str
    stable: int | None = None
    status_reason: str = ""
    steps: list = field(default_factory=list)
    current_step: int = 0
    candidate_weight: int = 0
    shadow: bool = False
    interval: int | None = None
    failures: int = 0
    created_by: str = ""
    created_at: datetime | None = None
    finished_at: datetime | None = None
    analysis: list = field(default_factory=list)
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    FINISHED = ("promoted", "aborted")

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    @classmethod
    def from_api(cls, data: dict) -> Rollout:
        return build(cls, data)


@dataclass(frozen=True)
class ServingState:
    model: str
    stable: int | None = None
    previous: int | None = None
    previous_retire_at: datetime | None = None
    active_rollout: int | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict) -> ServingState:
        return build(cls, data)


@dataclass(frozen=True)
class Prediction:
    prediction_id: str
    version: int
    label: str
    probabilities: dict = field(default_factory=dict)
    confidence: float = 0.0
    route: str = ""
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict) -> Prediction:
        return build(cls, data)


@dataclass(frozen=True)
class FeedbackResult:
    recorded: int
    correct: int = 0
    incorrect: int = 0
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict) -> FeedbackResult:
        return build(cls, data)


@dataclass(frozen=True)
class AuditEvent:
    id: int
    created_at: datetime | None
    action: str
    outcome: str = ""
    actor_username: str = ""
    object_type: str = ""
    object_id: str = ""
    object_label: str = ""
    model_name: str = ""
    version_number: int | None = None
    changes: Any = None
    detail: Any = None
    request_id: str = ""
    hash: str = ""
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict) -> AuditEvent:
        return build(cls, data)
