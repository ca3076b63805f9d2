from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.utils.translation import gettext_lazy as _

from .models import ApiKey, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "role", "is_active", "is_superuser", "expires_at", "date_joined"]
    list_filter = ["role", "is_active", "is_superuser"]
    fieldsets = DjangoUserAdmin.fieldsets + (
        (_("Hub"), {"fields": ["role", "expires_at", "deleted_at"]}),
    )
    readonly_fields = ["deleted_at"]
    add_fieldsets = DjangoUserAdmin.add_fieldsets + ((_("Hub"), {"fields": ["role"]}),)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "user", "is_enabled", "expires_at", "created_at", "last_used_at"]
    list_filter = ["is_enabled"]
    search_fields = ["name", "prefix", "user__username"]
    list_select_related = ["user"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    fields = ["user", "name", "is_enabled", "expires_at", "prefix", "created_at", "last_used_at"]
    autocomplete_fields = ["user"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, secret = ApiKey.objects.issue(
            user=obj.user, name=obj.name, is_enabled=obj.is_enabled, expires_at=obj.expires_at
        )
        obj.pk, obj.prefix, obj.secret_hash = key.pk, key.prefix, key.secret_hash
        obj._state.adding = False
        messages.warning(
            request,
            _("The secret of key %(name)s is %(secret)s. Copy it now: it is not stored and will not be shown again.")
            % {"name": key.name, "secret": secret},
        )
