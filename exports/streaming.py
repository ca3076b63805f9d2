"""Streamed export bodies that always finish their audit record.

Django calls close() on a streaming body when the response ends, including when the client went
away and when iteration never began (a HEAD request, an error before the first byte). That is
where a half-read source is shut down and the audit record gets "cancelled".
"""

import logging
from collections.abc import Iterator

from .audit import Outcome, finish_audit
from .models import ExportAudit

log = logging.getLogger("exports.streaming")


class AuditedStream:
    """Relays the byte chunks of `source`, counting them, and finishes `audit` exactly once:
    ok when the source is exhausted, failed when it raises (the exception propagates, so the
    server aborts the transfer instead of ending it cleanly), cancelled when closed early.

    `source` may offer `rows` (int, read when the stream ends) and `close()`.

    With `deferred=True` the end of the data does not yet mean ok: the caller (a command
    writing a file) calls complete() once the file is in place, or fail() when writing it did
    not work out.
    """

    def __init__(self, source, audit: ExportAudit, *, deferred: bool = False):
        self.source = source
        self.audit = audit
        self.bytes = 0
        self.finished = False
        self.deferred = deferred
        self._chunks = self._relay()

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def _relay(self) -> Iterator[bytes]:
        try:
            for chunk in self.source:
                self.bytes += len(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as exc:
            log.exception("export_stream_failed kind=%s audit=%s", self.audit.kind, self.audit.pk)
            self.fail(exc)
            raise
        if not self.deferred:
            self.complete()

    def complete(self) -> None:
        self._finish(Outcome.OK)

    def fail(self, exc: BaseException) -> None:
        self._finish(Outcome.FAILED, detail=f"{type(exc).__name__}: {exc}")

    def _finish(self, outcome: str, detail: str = "") -> None:
        if self.finished:
            return
        self.finished = True
        finish_audit(
            self.audit,
            outcome=outcome,
            rows=getattr(self.source, "rows", None),
            bytes=self.bytes,
            detail=detail,
        )

    def close(self, error: Exception | None = None) -> None:
        """Stop reading and finish the record: cancelled, or failed with `error` (a consumer's
        own failure, such as a write to a closed pipe). The source is shut down first: until
        then it may hold the database connection (an open COPY) that the record is saved
        through."""
        try:
            self._chunks.close()
        finally:
            close_source = getattr(self.source, "close", None)
            try:
                if close_source is not None:
                    close_source()
            finally:
                if error is not None:
                    self.fail(error)
                else:
                    self._finish(Outcome.CANCELLED, detail="closed before the end of the data")


def streaming_download(request, source, *, audit: ExportAudit, filename: str, content_type: str):
    """A download of `source` through AuditedStream: attachment, never cached. A HEAD request
    gets the headers only; its source is closed unread and the record says so."""
    from django.http import HttpResponse, StreamingHttpResponse
    from django.utils.http import content_disposition_header

    if request is not None and request.method == "HEAD":
        stream = AuditedStream(source, audit)
        stream.close()
        response = HttpResponse(content_type=content_type)
    else:
        response = StreamingHttpResponse(AuditedStream(source, audit), content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
