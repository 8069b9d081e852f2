"""The four roles are Django groups; what each may do is this one table."""

from django.contrib.auth.models import Group, Permission

ENGINEER = "engineer"
REVIEWER = "reviewer"
MANAGER = "manager"
ADMIN = "admin"
ROLES = (ENGINEER, REVIEWER, MANAGER, ADMIN)

_READ = [
    "registry.view_registeredmodel",
    "registry.view_modelversion",
    "registry.view_dataset",
    # Review history is part of what every role reads about a version.
    "governance.view_reviewrequest",
    "governance.view_decision",
    # Explanation reports are the evidence reviews rest on; every role reads them.
    "explanations.view_explanationreport",
    # Where versions serve, how rollouts went and how the models behave live.
    "rollouts.view_rollout",
    "rollouts.view_analysisrun",
    "rollouts.view_predictionlog",
    "rollouts.view_alert",
]

# Starting rollouts and their manual gates (promote/pause/resume/abort), and
# calling the serving API; engineers run their own models' releases.
_ROLLOUT_WRITE = [
    "rollouts.add_rollout",
    "rollouts.change_rollout",
    "rollouts.serve_prediction",
    "rollouts.pin_version",
    "rollouts.add_feedback",
]

# Webhook subscriptions of the models one may change (engineers); admins also
# manage those of every model at once (`model: null`).
_WEBHOOKS = [
    "notifications.view_webhooksubscription",
    "notifications.add_webhooksubscription",
    "notifications.delete_webhooksubscription",
]

# "app_label.codename" per role. Reviewers and managers read; only engineers
# (and admins) write to the registry.
ROLE_PERMISSIONS: dict[str, list[str]] = {
    ENGINEER: _READ
    + [
        "registry.add_registeredmodel",
        "registry.add_modelversion",
        "registry.add_dataset",
        "governance.add_reviewrequest",
        "explanations.add_explanationreport",
    ]
    + _ROLLOUT_WRITE
    + _WEBHOOKS,
    # Only reviewers decide; separation of duties is checked per version.
    # Reviewers may also request the explanation reports they need as evidence.
    REVIEWER: _READ + ["governance.add_decision", "explanations.add_explanationreport"],
    # Managers read every model, whichever team owns it (governance/access.py).
    MANAGER: _READ + ["governance.view_auditevent", "governance.view_all_models"],
    ADMIN: _READ
    + [
        "governance.view_all_models",
        "governance.manage_teams",
        "registry.add_registeredmodel",
        "registry.add_modelversion",
        "registry.add_dataset",
        "governance.view_auditevent",
        "governance.add_reviewrequest",
        "explanations.add_explanationreport",
        "explanations.change_explanationreport",
        "notifications.manage_global_webhooks",
    ]
    + _ROLLOUT_WRITE
    + _WEBHOOKS,
}


def ensure_role_groups(**kwargs) -> None:
    """Create the role groups with exactly the permissions in ROLE_PERMISSIONS
    (runs after every migrate, so a new permission reaches existing installs)."""
    for role, perm_names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        permissions = []
        for name in perm_names:
            app_label, codename = name.split(".")
            permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if permission is not None:
                permissions.append(permission)
        group.permissions.set(permissions)


def roles_of(user) -> set[str]:
    if not user.is_authenticated:
        return set()
    return set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
