from django.http import HttpResponseBadRequest


class RejectNulMiddleware:
    """PostgreSQL text cannot hold NUL, so a parameter holding one can never match or be stored:
    answer 400 naming the parameter, before any view (the admin's filters and search included)
    passes it to a query and fails with a 500. JSON bodies are the ingest API's to validate."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        params = [request.GET]
        # Not multipart: reading it here would parse uploads before a view (the restore) has
        # chosen its upload handlers.
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            params.append(request.POST)
        for query in params:
            for name, values in query.lists():
                if "\x00" in name or any("\x00" in value for value in values):
                    return HttpResponseBadRequest(
                        f"The parameter {name.replace(chr(0), '')!r} holds a NUL character.",
                        content_type="text/plain; charset=utf-8",
                    )
        return self.get_response(request)
