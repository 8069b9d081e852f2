"""`manage.py rebuild_prediction_aggregates --since 2026-01-01 [--until ...] [--model NAME]`:
recompute the per-minute and per-half-hour prediction aggregates of a period
from the raw log rows and their feedback. The backfill for rows logged before
the aggregates existed (the migration that adds them copies nothing), and the
repair if aggregates and rows ever disagree. Derived data only: the log rows
are read, never changed."""

from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from registry.models import RegisteredModel
from rollouts.aggregation import HALF_HOUR, period_start, rebuild_aggregates


def _moment(text: str) -> datetime:
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text)
        if day is None:
            raise CommandError(f"{text!r} is not a date (2026-01-31) or a time (2026-01-31T12:00:00Z).")
        moment = datetime(day.year, day.month, day.day)
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Recompute prediction aggregates (monitoring's per-minute sums) from the raw log rows of a period."

    def add_arguments(self, parser):
        parser.add_argument("--since", required=True, help="first day or moment (UTC when no offset is given)")
        parser.add_argument(
            "--until",
            help="end (exclusive); default: the start of the current half-hour, so the period the "
            "log writer is still adding to is left alone",
        )
        parser.add_argument("--model", help="only this model's versions")

    def handle(self, *args, since: str, until: str | None, model: str | None, **options):
        start = _moment(since)
        end = _moment(until) if until else period_start(timezone.now(), HALF_HOUR)
        if end <= start:
            raise CommandError("--until must be after --since.")
        version_ids = None
        if model is not None:
            found = RegisteredModel.objects.filter(name=model).first()
            if found is None:
                raise CommandError(f"No model named {model!r}.")
            version_ids = list(found.versions.values_list("pk", flat=True))
        read = rebuild_aggregates(since=start, until=end, version_ids=version_ids)
        self.stdout.write(f"Rebuilt the aggregates of {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} from {read} rows.")
