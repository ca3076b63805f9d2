from django.core.management.base import BaseCommand, CommandError

from exports.audit import Channel, Kind
from exports.outfile import write_export
from exports.probe_logs import FILTER_FIELDS, ProbeLogFilterForm, probe_logs_export
from monitoring.models import ProviderEndpoint


class Command(BaseCommand):
    help = (
        "Write one endpoint's probe log as text: the same bytes as "
        "GET /exports/probe-logs/ENDPOINT_ID.txt with the same filters. Times are milliseconds "
        "since the epoch or ISO 8601 (end exclusive); lines are in TIME_ZONE. A first line "
        "starting with # names the endpoint and the time span, then one line per probe "
        "(nothing matching: an empty file). The file is written under a temporary name and "
        "renamed when complete."
    )

    def add_arguments(self, parser):
        parser.add_argument("endpoint_id", type=int, metavar="ENDPOINT_ID")
        form = ProbeLogFilterForm()
        for name in FILTER_FIELDS:
            field = form.fields[name]
            help_text = str(field.label)
            if getattr(field, "choices", None):
                help_text += f" ({', '.join(str(value) for value, _ in field.choices if value)})"
            if field.help_text:
                help_text += f": {field.help_text}"
            parser.add_argument(
                "--" + name.replace("_", "-"), dest=name, metavar=name.upper(), help=help_text
            )
        parser.add_argument(
            "--output", "-o", default="-", help="file to write, or - for standard output (default)"
        )

    def handle(self, *args, endpoint_id, output, **options):
        endpoint = ProviderEndpoint.objects.select_related("provider").filter(pk=endpoint_id).first()
        if endpoint is None:
            raise CommandError(f"ENDPOINT_ID: no endpoint with id {endpoint_id}.")
        form = ProbeLogFilterForm(
            {name: options[name] for name in FILTER_FIELDS if options.get(name) is not None}
        )
        if not form.is_valid():
            raise CommandError(
                "; ".join(
                    f"--{field.replace('_', '-')}: {' '.join(str(m) for m in messages)}"
                    for field, messages in form.errors.items()
                )
            )
        export = probe_logs_export(endpoint, form.cleaned_data)
        result = write_export(
            export.source,
            output=output,
            kind=Kind.PROBE_LOGS,
            channel=Channel.COMMAND,
            user=None,
            filters=export.filters,
            stdout=self.stdout,
            stderr=self.stderr,
        )
        if output != "-":
            self.stderr.write(f"Wrote {result.rows:,} probe lines ({result.bytes:,} bytes) to {output}.")
