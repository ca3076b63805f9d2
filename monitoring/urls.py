from django.urls import path

from exports.database_views import data_management

from . import availability_views, views
from . import session_views

app_name = "dashboard"

urlpatterns = [
    path("", views.home, name="home"),
    path("settings/data/", data_management, name="data"),
    path("logs/", views.usage_logs, name="logs"),
    path("sessions/", session_views.sessions, name="sessions"),
    path("sessions/<path:session_id>/", session_views.session_detail, name="session"),
    path("availability/", availability_views.availability, name="availability"),
    path(
        "availability/endpoints/<int:endpoint_id>/",
        availability_views.endpoint_health,
        name="endpoint-health",
    ),
    path(
        "availability/endpoints/<int:endpoint_id>/lines/",
        availability_views.endpoint_lines,
        name="endpoint-lines",
    ),
    path(
        "availability/endpoints/<int:endpoint_id>/probe/",
        availability_views.endpoint_probe,
        name="endpoint-probe",
    ),
]
