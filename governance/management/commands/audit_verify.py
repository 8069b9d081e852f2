"""Recompute the audit chain and check it against signed checkpoints.

    manage.py audit_verify [--checkpoint FILE ...] [--workers N]

Exits 0 when the chain is intact and every checkpoint matches, 1 otherwise,
naming the first broken event and why.
"""

import json
import os
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from glassbox.errors import GlassboxError
from governance.audit_integrity import ChainBreak, checkpoint_key, verify_chain, verify_checkpoint


class Command(BaseCommand):
    help = "Recompute the audit trail's hash chain; with --checkpoint, also check signed checkpoints."

    def add_arguments(self, parser):
        parser.add_argument(
            "--checkpoint",
            action="append",
            default=[],
            metavar="FILE",
            help="a checkpoint written by audit_checkpoint (repeatable); needs AUDIT_CHECKPOINT_KEY",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=os.cpu_count() or 1,
            help="processes checking id ranges in parallel (default: one per CPU)",
        )

    def handle(self, *args, checkpoint: list[str], workers: int, **options):
        # Read and key the checkpoints first: a bad file should not cost a full walk.
        statements = [(path, self._read_checkpoint(path)) for path in checkpoint]
        key = None
        if statements:
            try:
                key = checkpoint_key()
            except GlassboxError as exc:
                raise CommandError(exc.message) from exc

        started = time.perf_counter()
        checked, chain_break = verify_chain(workers=max(1, workers))
        elapsed = time.perf_counter() - started
        rate = checked / elapsed if elapsed > 0 else 0.0
        self.stdout.write(f"Checked {checked:,} events in {elapsed:.2f} s ({rate:,.0f} events/s).")

        problems: list[str] = []
        if chain_break is not None:
            problems.append(self._describe("chain", chain_break))
        for path, statement in statements:
            try:
                found = verify_checkpoint(statement, key=key)
            except GlassboxError as exc:
                raise CommandError(f"{path}: {exc.message}") from exc
            if found is None:
                matched = f"event #{statement['event_id']} matches ({statement['created_at']})"
                self.stdout.write(f"Checkpoint {path}: {matched}.")
            else:
                problems.append(self._describe(f"checkpoint {path}", found))
        if problems:
            raise CommandError("\n".join(problems), returncode=1)
        self.stdout.write(self.style.SUCCESS("The audit trail is intact."))

    def _read_checkpoint(self, path: str) -> dict:
        try:
            statement = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot read checkpoint {path}: {exc}") from exc
        if not isinstance(statement, dict):
            raise CommandError(f"{path} is not a checkpoint (expected a JSON object).")
        return statement

    @staticmethod
    def _describe(where: str, found: ChainBreak) -> str:
        return f"BROKEN ({where}) at event #{found.event_id}: {found.reason}"
