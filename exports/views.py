from django.utils.translation import gettext as _
from django.views.decorators.http import require_safe

from monitoring.models import ProviderEndpoint

from .access import export_view, json_error
from .audit import Channel, Kind
from .filters import UsageFilterForm, filter_usage, filters_for_audit, scope_filters
from .probe_logs import ProbeLogFilterForm, probe_logs_response
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


@require_safe
@export_view(Kind.PROBE_LOGS)
def probe_logs_txt(request, endpoint_id):
    endpoint = ProviderEndpoint.objects.select_related("provider").filter(pk=endpoint_id).first()
    if endpoint is None:
        return json_error(404, _("No endpoint with id %(id)s.") % {"id": endpoint_id})
    form = ProbeLogFilterForm(request.GET)
    if not form.is_valid():
        return json_error(400, form.error_text(), fields=form.errors.get_json_data())
    return probe_logs_response(request, endpoint, form.cleaned_data, channel=Channel.WEB)
