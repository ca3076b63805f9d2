from django import template

from monitoring.sessions import session_url

register = template.Library()


@register.filter
def session_page_url(session_id: str) -> str:
    """{{ row.session_id|session_page_url }}: the session's page, whatever its id holds."""
    return session_url("dashboard:session", session_id)
