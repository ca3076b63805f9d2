"""Settings read from the environment: a value out of range stops the process at start-up with
a message naming the variable, instead of deleting data or failing every request later."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_settings(**env):
    environment = {**os.environ, "SECRET_KEY": "x", **env}
    return subprocess.run(
        [sys.executable, "-c", "import hub.settings as s; print(s.USAGE_EXPORT_MAX_ROWS, s.PROBE_JITTER)"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("PROBE_LOG_RETENTION_DAYS", "0", "PROBE_LOG_RETENTION_DAYS=0 is out of range: it must be 1 or more."),
        ("USAGE_EXPORT_MAX_ROWS", "-5", "USAGE_EXPORT_MAX_ROWS=-5 is out of range"),
        ("BACKUP_COMPRESSION_LEVEL", "10", "it must be from 0 to 9"),
        ("BACKUP_LOCK_TTL_MS", "abc", "BACKUP_LOCK_TTL_MS='abc' is not a whole number"),
        ("PROBE_METHOD", "udp", "PROBE_METHOD='udp': use tcp, head or get."),
        ("SESSION_DETAILS_RETENTION_DAYS", "0", "it must be 1 or more"),
        ("PROBE_JITTER", "nan", "PROBE_JITTER='nan' is not a number"),
        ("PROBE_INTERVAL_S", "inf", "PROBE_INTERVAL_S='inf' is not a number"),
        ("INGEST_MAX_ROWS", "1_000", "INGEST_MAX_ROWS='1_000' is not a whole number"),
        ("USAGE_PAGE_SIZE", "\uff15\uff10", "is not a whole number"),
    ],
)
def test_a_setting_out_of_range_stops_start_up_naming_the_variable(name, value, message):
    result = load_settings(**{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr


def test_empty_values_take_the_defaults_and_floats_are_read():
    result = load_settings(USAGE_EXPORT_MAX_ROWS="", PROBE_JITTER=".25", PROBE_INTERVAL_S="1e2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "0.25"]
