from django.urls import path

from . import views

app_name = "exports"

urlpatterns = [
    path("usage-logs.csv", views.usage_csv, name="usage-csv"),
    path("probe-logs/<int:endpoint_id>.txt", views.probe_logs_txt, name="probe-logs-txt"),
]
