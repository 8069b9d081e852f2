"""Sign the audit chain's current head with the key from the environment.

    AUDIT_CHECKPOINT_KEY=... manage.py audit_checkpoint [--output FILE]

Prints (or writes) {"event_id", "hash", "created_at", "signature"}. Keep the
file outside the database - in a ticket, a mail to compliance, object storage
with retention: `audit_verify --checkpoint FILE` later proves that nothing up
to that event was rewritten, even by someone who recomputed every hash.
"""

import getpass
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from glassbox.errors import GlassboxError
from governance.audit_integrity import checkpoint_create


class Command(BaseCommand):
    help = "Sign the audit trail's current head (HMAC-SHA256, key from AUDIT_CHECKPOINT_KEY)."

    def add_arguments(self, parser):
        parser.add_argument("--output", metavar="FILE", help="write the checkpoint here (never overwrites a file)")

    def handle(self, *args, output: str | None, **options):
        target = Path(output) if output else None
        if target is not None and target.exists():
            # Old checkpoints are evidence; never replace one.
            raise CommandError(f"{target} exists; choose a new file name for each checkpoint.")
        try:
            statement = checkpoint_create(detail={"command": "audit_checkpoint", "os_user": _os_user()})
        except GlassboxError as exc:
            raise CommandError(exc.message) from exc
        text = json.dumps(statement, indent=2) + "\n"
        if target is None:
            self.stdout.write(text, ending="")
            return
        with open(target, "x", encoding="utf-8") as handle:
            handle.write(text)
        self.stderr.write(f"Wrote the checkpoint of event #{statement['event_id']} to {target}.")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return ""
