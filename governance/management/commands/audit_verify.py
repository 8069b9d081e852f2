"""Recompute the audit chain and check it against signed checkpoints.

    manage.py audit_verify [--checkpoint FILE ...] [--workers N] [--deep]

Exits 0 when the chain is intact and every checkpoint matches, 1 otherwise,
naming the first broken event and why. With --deep it also recomputes the
digests the trail recorded of report results, dataset files and artifacts
(governance.audit_deep) and names each one that no longer matches.
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
        parser.add_argument(
            "--deep",
            action="store_true",
            help="also recompute the digests of report results, dataset files and stored artifacts",
        )

    def handle(self, *args, checkpoint: list[str], workers: int, deep: bool = False, **options):
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
        if deep:
            problems.extend(self._deep(workers=max(1, workers)))
        if problems:
            raise CommandError("\n".join(problems), returncode=1)
        self.stdout.write(self.style.SUCCESS("The audit trail is intact."))

    def _deep(self, *, workers: int) -> list[str]:
        from governance.audit_deep import verify_deep

        started = time.perf_counter()
        result = verify_deep(workers=workers)
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"Deep: recomputed {result.reports:,} report digests, {result.datasets:,} dataset files and "
            f"{result.artifacts:,} artifacts ({result.artifact_bytes / 2**20:,.1f} MiB), checked the evidence of "
            f"{result.decisions:,} decisions in {elapsed:.2f} s."
        )
        shown = [f"MISMATCH (deep) {mismatch}" for mismatch in result.mismatches[:50]]
        if len(result.mismatches) > len(shown):
            shown.append(f"... and {len(result.mismatches) - len(shown)} more")
        return shown

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
