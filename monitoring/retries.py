"""The one definition of a usage row's retry count.

A provider chain lists routing decisions (which provider was selected and why) and upstream
attempts. Only attempts count: retry count = max(attempts - 1, 0). The count is computed when a
row is written and stored in an indexed column, so the CSV column and the "min retry count"
filter cannot disagree.
"""

from collections.abc import Iterable

# Entries that record a request actually sent upstream (failed, aborted, or a hedge leg).
ATTEMPT_REASONS = frozenset(
    {
        "concurrent_limit_failed",
        "retry_failed",
        "response_incomplete",
        "system_error",
        "resource_not_found",
        "client_error_non_retryable",
        "endpoint_pool_exhausted",
        "vendor_type_all_timeout",
        "client_abort",
        "client_abort_no_first_byte",
        "hedge_winner",
        "hedge_loser_cancelled",
        "hedge_loser_billed",
        "http2_fallback",
    }
)
# A success entry is an attempt only when it carries the upstream's status code; without one it
# records a selection that succeeded, not a response.
SUCCESS_REASONS = frozenset({"request_success", "retry_success"})
# The retry_count column is a PositiveSmallIntegerField: a longer chain (the ingest API refuses
# chains over 1,000 entries; an admin edit does not) is held to it rather than overflow it.
RETRY_COUNT_MAX = 32767


def is_attempt(entry: object) -> bool:
    if not isinstance(entry, dict):
        return False
    reason = entry.get("reason")
    if not isinstance(reason, str):
        # A list or object here (a malformed chain) is no known reason; `in` on a frozenset
        # would raise TypeError for it and turn an ingest or an admin save into a 500.
        return False
    if reason in ATTEMPT_REASONS:
        return True
    if reason in SUCCESS_REASONS:
        status = entry.get("statusCode")
        return isinstance(status, int) and not isinstance(status, bool) and status != 0
    # initial_selection, session_reuse, hedge_triggered, hedge_launched and unknown reasons
    # are decisions, not requests.
    return False


def retry_count_from_chain(chain: Iterable | None) -> int:
    if not chain or not isinstance(chain, list | tuple):
        return 0
    attempts = sum(1 for entry in chain if is_attempt(entry))
    return min(max(attempts - 1, 0), RETRY_COUNT_MAX)
