"""Values for the usage-log page's dropdowns, scoped to what the viewer may see."""

from django.core.cache import cache

from accounts.models import ApiKey, User
from exports.access import is_admin

from .models import MessageRequest, Provider

CACHE_SECONDS = 300


def distinct_values(field: str, user_id: int | None) -> list:
    key = f"usage-choices:{field}:{user_id or 'all'}"
    values = cache.get(key)
    if values is None:
        rows = MessageRequest.objects.all()
        if user_id is not None:
            rows = rows.filter(user_id=user_id)
        values = sorted(
            v for v in rows.order_by().values_list(field, flat=True).distinct()[:500] if v
        )
        cache.set(key, values, CACHE_SECONDS)
    return values


def usage_filter_choices(user) -> dict:
    """Admins choose among everything; a user only among their own keys and the models,
    endpoints and providers of their own rows (the reference system leaked everyone's)."""
    own = None if is_admin(user) else user.pk
    keys = ApiKey.objects.select_related("user").order_by("user__username", "name")
    providers = Provider.objects.order_by("name")
    if own is not None:
        keys = keys.filter(user_id=own)
        providers = providers.filter(pk__in=distinct_values("provider_id", own))
    return {
        "users": User.objects.order_by("username") if own is None else User.objects.none(),
        "keys": keys,
        "providers": providers,
        "models": distinct_values("model", own),
        "endpoints": distinct_values("endpoint", own),
    }
