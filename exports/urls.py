from django.urls import path

from . import database_views, views

app_name = "exports"

urlpatterns = [
    path("usage-logs.csv", views.usage_csv, name="usage-csv"),
    path("database-backup", database_views.database_backup, name="database-backup"),
    path("database-restore", database_views.database_restore, name="database-restore"),
    path("probe-logs/<int:endpoint_id>.txt", views.probe_logs_txt, name="probe-logs-txt"),
]
