"""The Django admin's "Back up database" entry: a button on the export audit list that opens a
small form and downloads through the same code as the dashboard (channel "admin")."""

from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext as _

from .access import is_admin, json_error
from .audit import Channel


class DatabaseBackupAdminMixin:
    change_list_template = "admin/exports/exportaudit/change_list.html"

    def get_urls(self):
        backup = path(
            "backup/",
            self.admin_site.admin_view(self.backup_database_view),
            name="exports_exportaudit_backup",
        )
        return [backup, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_back_up": is_admin(request.user)}
        return super().changelist_view(request, extra_context)

    def backup_database_view(self, request):
        from .database_views import BackupForm, backup_download

        if not is_admin(request.user):
            raise PermissionDenied
        if "mode" in request.GET:
            form = BackupForm(request.GET)
            if not form.is_valid():
                return json_error(400, _("mode must be full or exclude_logs."))
            return backup_download(
                request, exclude_logs=form.cleaned_data["mode"] == "exclude_logs", channel=Channel.ADMIN
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Back up database"),
            "form": BackupForm(),
        }
        return TemplateResponse(request, "admin/exports/exportaudit/backup.html", context)
