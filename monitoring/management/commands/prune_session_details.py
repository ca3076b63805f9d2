from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from monitoring.detail_retention import prune_details, retention_cutoff


class Command(BaseCommand):
    help = (
        "Delete stored request details older than SESSION_DETAILS_RETENTION_DAYS (counted from "
        "the request's time), in batches. The usage rows are kept and marked as pruned in the "
        "same statement, so their export answers that the details were pruned (and a retried "
        "ingest does not store them again). Run it daily (cron, a systemd timer)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size", type=int, dest="batch_size",
            help="details per DELETE statement (default SESSION_DETAILS_PRUNE_BATCH)",
        )

    def handle(self, *args, batch_size, **options):
        days = settings.SESSION_DETAILS_RETENTION_DAYS
        batch_size = settings.SESSION_DETAILS_PRUNE_BATCH if batch_size is None else batch_size
        if batch_size < 1:
            raise CommandError("--batch-size must be 1 or more.")
        cutoff = retention_cutoff(days)
        progress = self.stderr.isatty()

        def report(deleted: int) -> None:
            if progress:
                self.stderr.write(f"\r{deleted:,} deleted", ending="")

        deleted = prune_details(cutoff=cutoff, batch_size=batch_size, on_batch=report)
        if progress and deleted:
            self.stderr.write("")
        self.stdout.write(
            f"Deleted {deleted:,} request details stored before "
            f"{cutoff.isoformat(timespec='seconds')} (older than {days} days); usage rows kept."
        )
