"""Who may export what: the one place the rules live. Views, admin actions, templates and
commands all ask here."""

import functools
import json

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.utils.translation import gettext as _

from .audit import Channel, Kind, record_denied

# Kinds every signed-in user may export (scoped to their own rows); the rest are admin-only.
OPEN_TO_USERS = frozenset({Kind.USAGE_CSV})


def is_admin(user) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_admin)


def can_export(user, kind: str) -> bool:
    # Disabled, soft-deleted and expired accounts cannot sign in (accounts/backends.py); the
    # same rule holds for a command run --as-user them.
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if getattr(user, "is_expired", False):
        return False
    return kind in OPEN_TO_USERS or is_admin(user)


def scope_usage(user, queryset, *, owner: str = "user_id"):
    """Rows `user` may export: all for admins (and for commands run by the operator, user
    None), their own for anyone else. `owner` names the user column (request__user_id for
    request details)."""
    if user is None or is_admin(user):
        return queryset
    return queryset.filter(**{owner: user.pk})


def json_error(status: int, message: str, **extra) -> HttpResponse:
    body = json.dumps({"error": message, **extra}, ensure_ascii=False)
    response = HttpResponse(body, status=status, content_type="application/json; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


def admin_page(view):
    """Dashboard pages for admins only: sign-in first (redirect), then 403 for non-admins."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_admin(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


def export_view(kind: str):
    """Guard an export view: 401 (JSON) for anonymous users and for users the kind is not open
    to, with a "denied" audit record; the spec's error table uses 401 for both."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if not can_export(request.user, kind):
                record_denied(
                    kind=kind,
                    channel=Channel.WEB,
                    user=request.user,
                    request=request,
                    detail=request.get_full_path()[:500],
                )
                return json_error(401, _("Unauthorized"))
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
