from django.urls import path

from . import api

app_name = "api"

urlpatterns = [
    path("ingest/requests", api.ingest_requests, name="ingest-requests"),
]
