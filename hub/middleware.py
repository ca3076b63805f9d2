import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, HttpResponseBadRequest
from django.utils import translation
from django.utils.translation import gettext as _

from exports.access import json_error

log = logging.getLogger("hub.database")


class RejectNulMiddleware:
    """PostgreSQL text cannot hold NUL, so a parameter (or a path) holding one can never match or
    be stored: answer 400 naming the parameter, before any view (the admin's filters and search
    included) passes it to a query and fails with a 500. JSON bodies are the ingest API's to
    validate."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path_info:
            # Ids in paths too (a session id, %00 decoded): none can hold NUL.
            return self.reject(request, "path", in_path=True)
        params = [request.GET]
        # Not multipart: reading it here would parse uploads before a view (the restore) has
        # chosen its upload handlers.
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            params.append(request.POST)
        for query in params:
            for name, values in query.lists():
                if "\x00" in name or any("\x00" in value for value in values):
                    return self.reject(request, name.replace("\x00", ""))
        return self.get_response(request)

    def reject(self, request, name: str, *, in_path: bool = False):
        # This runs before LocaleMiddleware: pick the language as it would. The ingest API
        # answers in English, as its views do (monitoring.api.in_english).
        if request.path.startswith("/api/"):
            language = "en"
        else:
            language = translation.get_language_from_request(request)
        with translation.override(language):
            if in_path:
                message = _("The path holds a NUL character.")
            else:
                message = _("The parameter %(name)s holds a NUL character.") % {"name": repr(name)}
        if request.path.startswith(("/exports/", "/api/")):
            # The shape of every other 400 of the export and ingest endpoints.
            return json_error(400, message, fields={name: [{"message": message, "code": "nul"}]})
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


def is_connection_failure(exc: BaseException) -> bool:
    """The server cannot be reached or is going away (libpq gives no SQLSTATE, or class 08
    "connection exception" / 57P "operator intervention"); not a query that failed."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(("08", "57P"))


class DatabaseUnavailableMiddleware:
    """The database itself down: every page needs it (the session says who is asking), so no
    view can answer for itself. 503 instead of Django's 500 page: JSON on the export and
    ingest endpoints like their other errors, plain text elsewhere. libpq's message names the
    host, port and user: it goes to the log, never to a possibly anonymous client."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not is_connection_failure(exception):
            return None
        text = str(exception).strip()
        log.error(
            "database_unavailable path=%s error=%s",
            request.path, text.splitlines()[0] if text else type(exception).__name__,
        )
        if request.path.startswith("/api/"):  # the ingest API answers in English
            with translation.override("en"):
                message = _("Database unreachable.")
        else:
            message = _("Database unreachable.")
        if request.path.startswith(("/exports/", "/api/")):
            return json_error(503, message)
        return HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
