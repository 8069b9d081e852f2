"""Every API list pages with a cursor (glassbox/pagination.py): walking the
`next` links from the first page to the last visits every row once, in the
list's order, and `previous` walks back; page_size is clamped to 200; a
cursor or page size that does not parse is a 400 with a code."""

import base64
from datetime import timedelta

import pytest
from django.utils import timezone

from governance import services as review_services
from governance.models import ApiToken, Decision
from rollouts.models import AnalysisRun, Rollout
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, UserFactory, team_member, team_named, token_for
from tests.explanations.reporting import make_report, uploaded_dataset

ROWS = 3


@pytest.fixture
def world(db, engineer, reviewer, manager):
    """Three rows behind every list, readable by the manager (who reads every model and team)."""
    models = [RegisteredModelFactory(name=f"m-{index}", created_by=engineer) for index in range(ROWS)]
    model = models[0]
    versions = [ModelVersionFactory(model=model, created_by=engineer) for _ in range(ROWS)]
    for index in range(ROWS):
        uploaded_dataset(uploader=engineer, rows=[("很好", "positive"), ("很差", "negative")], name=f"set-{index}")
    review = review_services.review_submit(actor=engineer, version=versions[0])
    for index in range(ROWS):
        Decision.objects.create(
            review=review, reviewer=UserFactory(username=f"rev-{index}", role="reviewer"), decision="approve"
        )
    for _ in range(ROWS):
        make_report(version=versions[0], requested_by=engineer)
    rollouts = [
        Rollout.objects.create(model=model, candidate=versions[1], status="aborted", created_by=engineer)
        for _ in range(ROWS)
    ]
    now = timezone.now()
    for index in range(ROWS):
        AnalysisRun.objects.create(
            rollout=rollouts[0],
            step_index=0,
            window_start=now - timedelta(minutes=index + 1),
            window_end=now - timedelta(minutes=index),
            verdict="successful",
        )
    for index in range(ROWS - 1):  # the default team already exists
        team_named(f"team-{index}")
    for index in range(ROWS - 1):  # erin is already a maintainer of default
        team_member(UserFactory(username=f"member-{index}"), "default", "viewer")
    for _ in range(ROWS - 1):  # the client's own token is the third
        token_for(manager)
    return {"model": model.name, "version": versions[0].number, "rollout": rollouts[0].pk}


LISTS = [
    ("/api/v1/models/", "name"),
    ("/api/v1/models/{model}/versions/", "version"),
    ("/api/v1/datasets/", "id"),
    ("/api/v1/models/{model}/versions/{version}/decisions/", "id"),
    ("/api/v1/models/{model}/versions/{version}/explanations/", "id"),
    ("/api/v1/models/{model}/rollouts/", "id"),
    ("/api/v1/rollouts/{rollout}/analysis/", "id"),
    ("/api/v1/teams/", "name"),
    ("/api/v1/teams/default/members/", "username"),
    ("/api/v1/auth/tokens/", "id"),
]


def walk(client, url: str, key: str) -> tuple[list, list]:
    """Every page's keys from `url` by `next` to the end, then back by `previous`."""
    forward, pages = [], []
    while url:
        body = client.get(url).json()
        assert set(body) == {"results", "next", "previous"}, body
        pages.append([row[key] for row in body["results"]])
        forward.extend(pages[-1])
        last, url = body, body["next"]
    backward = []
    url = last["previous"]
    while url:
        body = client.get(url).json()
        backward = [row[key] for row in body["results"]] + backward
        url = body["previous"]
    return forward, backward + pages[-1]


@pytest.mark.parametrize("path, key", LISTS, ids=[path for path, _ in LISTS])
def test_walking_next_links_visits_every_row_once_in_order(api, manager, world, path, key):
    client = api(manager)
    url = path.format(**world)
    everything = client.get(url).json()
    assert everything["next"] is None and everything["previous"] is None
    expected = [row[key] for row in everything["results"]]
    assert len(expected) >= ROWS

    forward, backward = walk(client, f"{url}?page_size=1", key)

    assert forward == expected == backward


def test_page_size_above_the_maximum_is_clamped_to_200(api, manager):
    client = api(manager)
    ApiToken.objects.bulk_create(
        ApiToken(user=manager, name=f"t{index}", key_hash=f"{index:064d}", prefix="gbx_x") for index in range(210)
    )

    first = client.get("/api/v1/auth/tokens/?page_size=1000").json()

    assert len(first["results"]) == 200 and first["next"] is not None
    rest = client.get(first["next"]).json()
    # 210 rows plus the client's own token.
    assert len(rest["results"]) == 11 and rest["next"] is None
    assert len(client.get("/api/v1/auth/tokens/").json()["results"]) == 50


def _cursor(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "query",
    [
        "cursor=not-base64!",
        "cursor=",
        f"cursor={_cursor('o=-4')}",
        f"cursor={_cursor('p=not-a-number')}",  # versions order by number
        "page_size=0",
        "page_size=ten",
    ],
)
def test_a_cursor_or_page_size_that_does_not_parse_is_a_400_with_a_code(api, engineer, sentiment_model, query):
    ModelVersionFactory(model=sentiment_model)

    response = api(engineer).get(f"/api/v1/models/{sentiment_model.name}/versions/?{query}")

    assert response.status_code == 400, response.content
    expected = "invalid_page_size" if query.startswith("page_size") else "invalid_cursor"
    assert response.json()["code"] == expected and response.json()["detail"]


def test_the_audit_trail_keeps_its_keyset_parameters_and_gains_both_links(api, manager, engineer):
    for index in range(3):
        RegisteredModelFactory(name=f"audited-{index}", created_by=engineer)
        review_services.review_submit(actor=engineer, version=ModelVersionFactory(model__name=f"v-{index}"))
    client = api(manager)

    first = client.get("/api/v1/audit/events/?limit=2").json()
    second = client.get(first["next"]).json()

    assert "before=" in first["next"]
    assert second["previous"] and "after=" in second["previous"]
    assert [e["id"] for e in client.get(second["previous"]).json()["results"]] == [e["id"] for e in first["results"]]
