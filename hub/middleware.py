from django.http import HttpResponseBadRequest
from django.utils import translation
from django.utils.translation import gettext as _

from exports.access import json_error


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
