from django.views.decorators.http import require_safe

from .access import export_view, json_error
from .audit import Channel, Kind
from .filters import UsageFilterForm, filter_usage, filters_for_audit, scope_filters
from .usage import usage_csv_response


@require_safe
@export_view(Kind.USAGE_CSV)
def usage_csv(request):
    form = UsageFilterForm(request.GET)
    if not form.is_valid():
        return json_error(400, form.error_text(), fields=form.errors.get_json_data())
    filters = scope_filters(request.user, form.cleaned_data)
    return usage_csv_response(
        request, filter_usage(filters), channel=Channel.WEB, filters=filters_for_audit(filters)
    )
