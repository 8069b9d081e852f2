from django.apps import AppConfig
from django.db.models.signals import post_migrate


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Governance"

    def ready(self) -> None:
        from governance import accounts, roles  # noqa: F401 (accounts connects the login/logout receivers)

        # No sender filter: permissions of apps migrated after this one exist
        # only by the last app's post_migrate, and the handler is idempotent.
        post_migrate.connect(roles.ensure_role_groups, dispatch_uid="glassbox-role-groups")
