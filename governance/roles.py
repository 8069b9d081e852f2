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
]

# "app_label.codename" per role. Reviewers and managers read; only engineers
# (and admins) write to the registry.
ROLE_PERMISSIONS: dict[str, list[str]] = {
    ENGINEER: _READ
    + [
        "registry.add_registeredmodel",
        "registry.add_modelversion",
        "registry.add_dataset",
    ],
    REVIEWER: _READ,
    MANAGER: _READ + ["governance.view_auditevent"],
    ADMIN: _READ
    + [
        "registry.add_registeredmodel",
        "registry.add_modelversion",
        "registry.add_dataset",
        "governance.view_auditevent",
    ],
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
