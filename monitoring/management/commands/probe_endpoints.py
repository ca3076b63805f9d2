import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from monitoring.prober import Prober, ProbeSettings
from monitoring.probes import METHODS


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


class Command(BaseCommand):
    help = (
        "Probe every enabled endpoint of every enabled provider, every --interval-s seconds "
        "(PROBE_TIMEOUT_INTERVAL_S while an endpoint times out, with jitter), until SIGTERM or "
        "Ctrl-C. Run as many as you like on as many hosts: each endpoint is probed once per "
        "interval. Also deletes probe logs older than PROBE_LOG_RETENTION_DAYS. "
        "Defaults come from the PROBE_* settings."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--once",
            action="store_true",
            help="probe the endpoints that are due once, then exit (for cron or a quick check)",
        )
        parser.add_argument(
            "--method",
            choices=METHODS,
            help="tcp: connect only; head: HTTP HEAD, then GET when HEAD gets no status; get: GET",
        )
        parser.add_argument(
            "--timeout-ms",
            type=positive_int,
            metavar="N",
            help="deadline for a whole probe: resolving, connecting, TLS and reading (PROBE_TIMEOUT_MS)",
        )
        parser.add_argument("--interval-s", type=positive_float, metavar="N")
        parser.add_argument("--concurrency", type=positive_int, metavar="N")

    def handle(self, *args, once, method, timeout_ms, interval_s, concurrency, **options):
        config = ProbeSettings.from_settings(
            method=method, timeout_ms=timeout_ms, interval_s=interval_s, concurrency=concurrency
        )
        if config.method not in METHODS:
            raise CommandError(f"PROBE_METHOD must be one of {', '.join(METHODS)}, not {config.method!r}.")
        verbose = options["verbosity"] >= 2
        prober = Prober(config, on_result=self.report if verbose else None)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            # Signals only stop the loop: in-flight probes end and are written, then we return.
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, lambda *_: prober.stop())
        try:
            self.stdout.write(
                f"Prober started: method={config.method} timeout={config.timeout_ms}ms "
                f"interval={config.interval_s:g}s concurrency={config.concurrency}"
                + (" (once)" if once else "")
            )
            self.stdout.flush()
            count = prober.run(once=once)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.stdout.write(f"Prober stopped after {count} probes.")

    def report(self, endpoint_id, entry):
        from exports.probe_logs import format_probe_line

        self.stdout.write(f"endpoint {endpoint_id}: {format_probe_line(entry)}")
        self.stdout.flush()
