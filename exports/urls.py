from django.urls import path

from . import database_views, views
from . import session_views

app_name = "exports"

urlpatterns = [
    path("usage-logs.csv", views.usage_csv, name="usage-csv"),
    path(
        "sessions/<path:session_id>/requests/<int:sequence>.json",
        session_views.session_request_json,
        name="session-request-json",
    ),
    path(
        "sessions/<path:session_id>/request.json",
        session_views.session_request_json,
        name="session-request-json-unsequenced",
    ),
    path("database-backup", database_views.database_backup, name="database-backup"),
    path("database-restore", database_views.database_restore, name="database-restore"),
    path("probe-logs/<int:endpoint_id>.txt", views.probe_logs_txt, name="probe-logs-txt"),
]
