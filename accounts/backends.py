from django.contrib.auth.backends import ModelBackend


class HubUserBackend(ModelBackend):
    """Django's backend, refusing expired and soft-deleted users as well as inactive ones, and
    giving admins (role admin or superuser: User.is_admin) every permission, so the Django
    admin and the dashboard agree on who is an admin."""

    def user_can_authenticate(self, user):
        return (
            super().user_can_authenticate(user)
            and user.deleted_at is None
            and not user.is_expired
        )

    def has_perm(self, user_obj, perm, obj=None):
        if getattr(user_obj, "is_admin", False):
            return True
        return super().has_perm(user_obj, perm, obj)

    def has_module_perms(self, user_obj, app_label):
        if getattr(user_obj, "is_admin", False):
            return True
        return super().has_module_perms(user_obj, app_label)
