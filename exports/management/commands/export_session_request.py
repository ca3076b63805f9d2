from django.core.management.base import BaseCommand, CommandError

from exports.audit import Channel, Kind, Outcome, finish_audit, start_audit
from exports.outfile import write_export
from exports.session_request import (
    RequestUnavailable,
    SessionRequestForm,
    audit_filters,
    find_session_request,
    session_request_export,
)


class OneFile:
    """The export's bytes as an export source for write_export."""

    rows = 1

    def __init__(self, content: bytes):
        self.content = content

    def __iter__(self):
        yield self.content


class Command(BaseCommand):
    help = (
        "Write one session request as JSON: the same bytes as "
        "GET /exports/sessions/<SESSION_ID>/requests/<N>.json (or .../request.json without "
        "--sequence). By default the file is named as the download is "
        "(session-<first 8>-seq-<N>-request.json) in the current folder; it is written under a "
        "temporary name and renamed when complete."
    )

    def add_arguments(self, parser):
        parser.add_argument("session_id", metavar="SESSION_ID", help="the session's id, exactly")
        parser.add_argument(
            "--sequence", "-n", metavar="N",
            help="the request's number inside the session; without it, the request that has none",
        )
        parser.add_argument(
            "--request-id", dest="request_id", metavar="ID",
            help="pick one request when several share the session and sequence",
        )
        parser.add_argument(
            "--output", "-o", metavar="PATH",
            help="file to write, or - for standard output (default: the download's file name)",
        )

    def handle(self, *args, session_id, sequence, request_id, output, **options):
        form = SessionRequestForm(
            {"session_id": session_id, "sequence": sequence, "request_id": request_id or ""}
        )
        if not form.is_valid():
            raise CommandError(
                "; ".join(
                    f"{'SESSION_ID' if name == 'session_id' else '--' + name.replace('_', '-')}: "
                    f"{' '.join(str(m) for m in messages)}"
                    for name, messages in form.errors.items()
                )
            )
        lookup = form.cleaned_data
        row = None
        try:
            row = find_session_request(**lookup)
            export = session_request_export(row)
        except RequestUnavailable as exc:
            audit = start_audit(kind=Kind.SESSION_REQUEST, channel=Channel.COMMAND, user=None,
                                filters=audit_filters(row, **lookup))
            finish_audit(audit, outcome=Outcome.FAILED, detail=f"{exc.reason}: {exc.message}")
            raise CommandError(exc.message) from exc
        output = output or export.filename
        result = write_export(
            OneFile(export.content),
            output=output,
            kind=Kind.SESSION_REQUEST,
            channel=Channel.COMMAND,
            user=None,
            filters=audit_filters(row, **lookup),
            stdout=self.stdout,
            stderr=self.stderr,
        )
        if output != "-":
            self.stderr.write(f"Wrote {result.bytes:,} bytes to {output}.")
