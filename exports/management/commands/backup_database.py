import os
import subprocess
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from exports.audit import Channel, Kind, Outcome, finish_audit, start_audit
from exports.backup import BackupError, backup_filename, find_pg_tool, start_backup
from exports.outfile import write_export


class Command(BaseCommand):
    help = (
        "Back up the database as a pg_dump custom-format archive (the same lock and pg_dump "
        "arguments as the dashboard download). The file is written under a temporary name and "
        "renamed when complete."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--exclude-logs",
            action="store_true",
            help="leave out the usage-log rows (and the request details that point at them); tables are kept",
        )
        parser.add_argument(
            "--output",
            "-o",
            default=".",
            help="a file, a folder (the file is named backup_YYYY-MM-DDTHH-mm-ss.dump), or - for "
            "standard output (default: the current folder)",
        )
        parser.add_argument(
            "--keep", type=int, metavar="N", help="with a folder: keep the N newest backups there, delete older ones"
        )
        parser.add_argument(
            "--verify",
            action="store_true",
            help="read the whole archive back with pg_restore (catches a truncated file)",
        )

    def handle(self, *args, exclude_logs, output, keep, verify, **options):
        if output != "-" and output.endswith(("/", os.sep)) and not Path(output).is_dir():
            raise CommandError(f"--output: the folder {output} does not exist.")
        folder = Path(output) if output != "-" and Path(output).is_dir() else None
        if keep is not None and (folder is None or keep < 1):
            raise CommandError("--keep: needs --output to be an existing folder, and N of 1 or more.")
        if verify and output == "-":
            raise CommandError("--verify: cannot read back standard output; write to a file or folder.")
        target = str(folder / backup_filename()) if folder is not None else output
        if output != "-" and not Path(target).parent.is_dir():
            raise CommandError(f"--output: the folder {Path(target).parent} does not exist.")
        mode = "exclude_logs" if exclude_logs else "full"
        try:
            stream = start_backup(exclude_logs=exclude_logs, actor="command")
        except BackupError as exc:
            audit = start_audit(kind=Kind.DATABASE_BACKUP, channel=Channel.COMMAND, filters={"mode": mode})
            finish_audit(audit, outcome=Outcome.FAILED, detail=f"{exc.status}: {exc}")
            raise CommandError(str(exc)) from exc
        try:
            result = write_export(
                stream,
                output=target,
                kind=Kind.DATABASE_BACKUP,
                channel=Channel.COMMAND,
                user=None,
                filters={"mode": mode, "output": target},
                stdout=self.stdout,
                stderr=self.stderr,
            )
        except BackupError as exc:  # pg_dump failed mid-stream; the partial file is gone
            raise CommandError(str(exc)) from exc
        finally:
            stream.close()  # a no-op after a complete dump; stops pg_dump and frees the lock otherwise
        if output == "-":
            return
        if verify:
            self.verify(target)
        self.stderr.write(f"Wrote {result.bytes:,} bytes to {target}.")
        if keep is not None:
            self.prune(folder, keep)

    def verify(self, path: str) -> None:
        # pg_restore -l reads only the table of contents; restoring to /dev/null reads every
        # data block, so a truncated archive fails here.
        check = subprocess.run(
            [find_pg_tool("pg_restore"), "--file=/dev/null", path], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise CommandError(f"--verify: {path} is not a complete archive: {check.stderr.strip()[-500:]}")
        self.stderr.write(f"Verified {path}: every block reads back.")

    def prune(self, folder: Path, keep: int) -> None:
        backups = sorted(folder.glob("backup_*.dump"), reverse=True)  # names sort by time
        for old in backups[keep:]:
            os.unlink(old)
            self.stderr.write(f"Deleted {old} (--keep {keep}).")
