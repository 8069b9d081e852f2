"""The profile page where each person turns notification kinds off."""

from governance.models import AuditEvent
from notifications.models import NotificationKind, NotificationPreference
from tests.conftest import page_client_for

PAGE = "/account/notifications/"


def test_every_kind_is_on_until_turned_off(reviewer):
    response = page_client_for(reviewer).get(PAGE)

    assert response.status_code == 200
    html = response.content.decode()
    assert "rita@example.test" in html
    for kind in NotificationKind.values:
        assert f'value="{kind}"' in html and html.count("checked") == len(NotificationKind.values)


def test_turning_kinds_off_with_the_form_token_saves_and_audits(reviewer):
    client = page_client_for(reviewer, enforce_csrf=True)
    client.get(PAGE)
    token = client.cookies["csrftoken"].value
    keep = [NotificationKind.REVIEW_DECIDED, NotificationKind.ALERT_RAISED]

    response = client.post(PAGE, {"enabled": keep, "csrfmiddlewaretoken": token})

    assert response.status_code == 302
    pref = NotificationPreference.objects.get(user=reviewer)
    assert set(pref.disabled_kinds) == set(NotificationKind.values) - set(keep)
    assert not pref.wants(NotificationKind.REVIEW_OPENED) and pref.wants(NotificationKind.ALERT_RAISED)
    event = AuditEvent.objects.get(action="notification.preferences")
    assert event.actor_username == "rita" and "review_opened" in event.changes["after"]["disabled"]
    assert "checked" in client.get(PAGE).content.decode()


def test_a_post_without_the_form_token_is_refused(reviewer):
    response = page_client_for(reviewer, enforce_csrf=True).post(PAGE, {"enabled": []})

    assert response.status_code == 403
    assert not NotificationPreference.objects.exists()


def test_an_unknown_kind_changes_nothing(reviewer):
    response = page_client_for(reviewer).post(PAGE, {"enabled": ["review_opened", "telepathy"]})

    assert response.status_code == 200 and "telepathy" in response.content.decode()
    assert not NotificationPreference.objects.exists()
