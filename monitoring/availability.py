"""Numbers and pictures of the availability pages: availability percentages and latency series
per endpoint, aggregated in PostgreSQL into a fixed number of time buckets (so a week of probes
of a hundred endpoints is still one small query), and drawn as inline SVG on the server."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection

from .models import ProbeLog


@dataclass
class Bucket:
    total: int = 0
    ok: int = 0
    latency_ms: float | None = None  # mean latency of the OK probes


@dataclass
class Series:
    start: datetime
    end: datetime
    buckets: list[Bucket]

    @property
    def total(self) -> int:
        return sum(b.total for b in self.buckets)

    @property
    def ok(self) -> int:
        return sum(b.ok for b in self.buckets)

    @property
    def availability(self) -> float | None:
        """Percentage of OK probes in the window; None without probes."""
        return 100 * self.ok / self.total if self.total else None


def latency_series(
    start: datetime, end: datetime, count: int, endpoint_ids: list[int] | None = None
) -> dict[int, Series]:
    """Per endpoint: `count` equal buckets from start to end with probe counts and the mean
    latency of the OK probes."""
    width = max((end - start).total_seconds() / count, 0.001)
    table = connection.ops.quote_name(ProbeLog._meta.db_table)
    sql = (
        "SELECT endpoint_id,"
        " LEAST(FLOOR(EXTRACT(EPOCH FROM (created_at - %s)) / %s)::int, %s) AS bucket,"
        " COUNT(*), COUNT(*) FILTER (WHERE ok),"
        " AVG(latency_ms) FILTER (WHERE ok AND latency_ms IS NOT NULL)"
        f" FROM {table} WHERE created_at >= %s AND created_at < %s"
    )
    params = [start, width, count - 1, start, end]
    if endpoint_ids is not None:
        sql += " AND endpoint_id = ANY(%s)"
        params.append(list(endpoint_ids))
    sql += " GROUP BY 1, 2"
    series: dict[int, Series] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for endpoint_id, index, total, ok, latency in cursor.fetchall():
            if endpoint_id not in series:
                series[endpoint_id] = Series(start, end, [Bucket() for _ in range(count)])
            series[endpoint_id].buckets[index] = Bucket(
                total, ok, float(latency) if latency is not None else None
            )
    for endpoint_id in endpoint_ids or []:
        series.setdefault(endpoint_id, Series(start, end, [Bucket() for _ in range(count)]))
    return series


def nice_ceiling(value: float) -> int:
    """The next of 1, 2, 5 x 10^n at or above `value` (an axis maximum)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


@dataclass
class Chart:
    """Geometry of one latency chart: an SVG path (gaps where no probe was OK), red marks for
    buckets with failures, and the axis maximum in milliseconds."""

    width: int
    height: int
    path: str = ""
    points: list[tuple[float, float]] = field(default_factory=list)
    fails: list[tuple[float, float, int, int]] = field(default_factory=list)  # x, w, fails, total
    max_ms: int = 0
    empty: bool = True


def latency_chart(series: Series, width: int, height: int, pad: int = 4) -> Chart:
    chart = Chart(width=width, height=height)
    count = len(series.buckets)
    step = width / count
    values = [b.latency_ms for b in series.buckets if b.latency_ms is not None]
    chart.max_ms = nice_ceiling(max(values)) if values else 0
    chart.empty = not any(b.total for b in series.buckets)
    commands, drawing = [], False
    for index, bucket in enumerate(series.buckets):
        x = round(index * step + step / 2, 1)
        if bucket.total and bucket.ok < bucket.total:
            chart.fails.append(
                (round(index * step, 1), round(max(step, 1), 1), bucket.total - bucket.ok, bucket.total)
            )
        if bucket.latency_ms is None or not chart.max_ms:
            drawing = False
            continue
        y = round(height - pad - (bucket.latency_ms / chart.max_ms) * (height - 2 * pad), 1)
        chart.points.append((x, y))
        # A segment start gets a zero-length stroke so that a lone bucket still shows a dot.
        commands.append(f"L{x} {y}" if drawing else f"M{x} {y} h0.01")
        drawing = True
    chart.path = " ".join(commands)
    return chart


def window_of(start: datetime | None, end: datetime | None, now: datetime,
              default: timedelta = timedelta(days=1)) -> tuple[datetime, datetime]:
    """A closed window for charts: open ends become now, or `default` before the end."""
    end = end or now
    return (start or end - default), end
