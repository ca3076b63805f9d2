from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from .backup_admin import DatabaseBackupAdminMixin
from .models import ExportAudit


@admin.register(ExportAudit)
class ExportAuditAdmin(DatabaseBackupAdminMixin, admin.ModelAdmin):
    """Read-only: the audit trail is written by the exports, never edited."""

    list_display = ["started_at", "kind", "channel", "actor", "outcome", "rows", "bytes", "client_ip"]
    list_filter = ["kind", "channel", "outcome", "started_at"]
    search_fields = ["actor", "detail"]
    date_hierarchy = "started_at"
    readonly_fields = [f.name for f in ExportAudit._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


admin.site.site_header = _("API proxy hub")
admin.site.site_title = _("API proxy hub")
