import os
import sys

from django.core.management.base import BaseCommand, CommandError

from exports.audit import Channel, Kind, Outcome, start_audit
from exports.backup import BackupError
from exports.restore import check_archive, check_options, finish_restore_audit, restore_archive


class Command(BaseCommand):
    help = (
        "Restore a pg_dump custom-format archive into the database (pg_restore --clean "
        "--if-exists --no-owner in one transaction), then run migrations. Takes the same lock "
        "as backups."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", metavar="PATH", help="the .dump file")
        parser.add_argument(
            "--exclude-logs",
            action="store_true",
            help="restore everything except the usage-log rows; only with --no-clean (into an empty database)",
        )
        parser.add_argument(
            "--no-clean", dest="clean", action="store_false", help="do not drop existing objects first"
        )
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def handle(self, *args, path, exclude_logs, clean, yes, **options):
        try:
            check_options(clean=clean, exclude_logs=exclude_logs)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        if not os.path.isfile(path):
            raise CommandError(f"PATH: {path} is not a file.")
        try:
            check_archive(path)
        except BackupError as exc:
            raise CommandError(f"PATH: {exc}") from exc
        if not yes:
            self.confirm(path)
        audit = start_audit(
            kind=Kind.DATABASE_RESTORE,
            channel=Channel.COMMAND,
            filters={"clean": clean, "exclude_logs": exclude_logs, "file": os.path.abspath(path)[:200]},
        )
        size = os.path.getsize(path)
        try:
            result = restore_archive(path, clean=clean, exclude_logs=exclude_logs, actor="command")
        except BackupError as exc:
            finish_restore_audit(audit, outcome=Outcome.FAILED, bytes=size, detail=f"{exc.status}: {exc}")
            raise CommandError(str(exc)) from exc
        finish_restore_audit(audit, outcome=Outcome.OK, bytes=size, detail=f"{result.seconds:.1f}s")
        self.stdout.write(result.migrate_output.rstrip())
        self.stdout.write(f"Restored {path} in {result.seconds:.1f} s.")

    def confirm(self, path: str) -> None:
        if not sys.stdin.isatty():
            raise CommandError("Not on a terminal: pass --yes to restore without confirmation.")
        answer = input(f"Restore {path} over the current database? This replaces its data. Type 'yes': ")
        if answer.strip().lower() != "yes":
            raise CommandError("Cancelled.")
