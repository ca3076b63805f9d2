"""Writing an export to a file or standard output, for the management commands.

A file is written under a temporary name in the target folder and renamed only when complete,
so a failure or Ctrl-C never leaves a half file under the final name.
"""

import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from django.core.management.base import CommandError

from .audit import start_audit
from .streaming import AuditedStream


@dataclass
class WriteResult:
    rows: int | None
    bytes: int


class Progress:
    """Rows (CSV records: newlines outside quotes) or bytes, and the rate, on a terminal."""

    def __init__(self, stderr, unit: str):
        self.stderr = stderr
        self.unit = unit
        self.enabled = stderr.isatty()
        self.started = self.last = time.monotonic()
        self.count = 0
        self.in_quotes = False

    def update(self, chunk: bytes) -> None:
        if not self.enabled:
            return
        if self.unit == "rows":
            for match in re.finditer(rb'["\n]', chunk):
                if match.group() == b'"':
                    self.in_quotes = not self.in_quotes
                elif not self.in_quotes:
                    self.count += 1
        else:
            self.count += len(chunk)
        now = time.monotonic()
        if now - self.last >= 0.5:
            self.last = now
            rate = self.count / max(now - self.started, 1e-6)
            self.stderr.write(f"\r{self.count:,} {self.unit}  {rate:,.0f} {self.unit}/s", ending="")
            self.stderr.flush()

    def done(self) -> None:
        if self.enabled and self.last != self.started:
            self.stderr.write("")


def _binary_stdout(stdout):
    out = getattr(stdout, "_out", stdout)
    return getattr(out, "buffer", None)


def write_export(source, *, output: str, kind: str, channel: str, user, filters: dict,
                 stdout, stderr, progress_unit: str = "bytes") -> WriteResult:
    """Stream `source` (an export source as the views use) to `output` (a path or "-"), with an
    audit record like every other channel."""
    target = None
    if output != "-":
        target = Path(output)
        if target.is_dir():
            raise CommandError(f"--output: {output} is a folder; name a file.")
        if not target.parent.exists():
            raise CommandError(f"--output: the folder {target.parent} does not exist.")
    audit = start_audit(kind=kind, channel=channel, user=user, filters=filters)
    # The record says ok only once the file is in place (written, synced, renamed).
    stream = AuditedStream(source, audit, deferred=True)
    progress = Progress(stderr, progress_unit)
    tmp_path = None
    try:
        if target is None:
            _write_stdout(stream, stdout, progress)
        elif target.exists() and not target.is_file():
            # A pipe or a device (/dev/stdout, a FIFO): written in place, never replaced.
            with open(target, "wb") as fh:
                _write_chunks(stream, fh, progress)
        else:
            fd, tmp_path = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            with os.fdopen(fd, "wb") as fh:
                _write_chunks(stream, fh, progress)
                os.fsync(fh.fileno())
            os.replace(tmp_path, target)
            tmp_path = None
        stream.complete()
    except BaseException as exc:
        # Failed, or cancelled for Ctrl-C; a no-op for the audit when the source itself failed
        # and said so. Closed before the record is written: a write that fails mid-stream
        # leaves the source's COPY open on the connection the record needs.
        stream.close(error=exc if isinstance(exc, Exception) else None)
        if tmp_path is not None and os.path.exists(tmp_path):
            os.unlink(tmp_path)
        if isinstance(exc, OSError):
            raise CommandError(f"--output: {exc}") from exc
        raise
    finally:
        progress.done()
    return WriteResult(rows=getattr(source, "rows", None), bytes=stream.bytes)


def _write_chunks(stream, fh, progress: Progress) -> None:
    for chunk in stream:
        fh.write(chunk)
        progress.update(chunk)
    fh.flush()


def _write_stdout(stream, stdout, progress: Progress) -> None:
    binary = _binary_stdout(stdout)
    if binary is not None:
        _write_chunks(stream, binary, progress)
        return
    for chunk in stream:
        stdout.write(chunk.decode("utf-8"), ending="")
        progress.update(chunk)
