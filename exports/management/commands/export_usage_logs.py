from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import translation

from accounts.models import User
from exports.access import can_export
from exports.audit import Channel, Kind, record_denied
from exports.filters import FILTER_FIELDS, UsageFilterForm, filter_usage, filters_for_audit, scope_filters
from exports.outfile import write_export
from exports.usage import usage_csv_export


class Command(BaseCommand):
    help = (
        "Write the usage-log CSV: the same bytes as GET /exports/usage-logs.csv with the same "
        "filters, user and language. Filters combine with AND; times are milliseconds since the "
        "epoch or ISO 8601 (end exclusive). Without --as-user every row may be exported, as for "
        "an admin. The file is written under a temporary name and renamed when complete."
    )

    def add_arguments(self, parser):
        form = UsageFilterForm()
        for name in FILTER_FIELDS:
            option = "--" + name.replace("_", "-")
            field = form.fields[name]
            if name == "exclude_status_200":
                parser.add_argument(option, dest=name, action="store_const", const="true",
                                    help="only rows that finished with a status other than 200")
            else:
                parser.add_argument(option, dest=name, metavar=name.upper(), help=str(field.label))
        parser.add_argument(
            "--as-user",
            metavar="USERNAME",
            help="export as this user would: a non-admin gets only their own rows",
        )
        parser.add_argument(
            "--language",
            choices=["zh-hans", "en"],
            help="language of the header row (default: LANGUAGE_CODE)",
        )
        parser.add_argument(
            "--output",
            "-o",
            default="-",
            help="file to write, or - for standard output (default)",
        )

    def handle(self, *args, as_user, language, output, **options):
        user = None
        if as_user:
            user = User.objects.filter(username=as_user).first()
            if user is None:
                raise CommandError(f"--as-user: no user named {as_user!r}.")
            if not can_export(user, Kind.USAGE_CSV):
                # As on the web: a disabled or expired account exports nothing.
                record_denied(kind=Kind.USAGE_CSV, channel=Channel.COMMAND, user=user,
                              detail="--as-user: the account may not sign in")
                raise CommandError(
                    f"--as-user: {as_user!r} may not export (account disabled or expired)."
                )
        raw = {name: options[name] for name in FILTER_FIELDS if options.get(name) is not None}
        form = UsageFilterForm(raw)
        if not form.is_valid():
            raise CommandError(
                "; ".join(
                    f"--{field.replace('_', '-')}: {' '.join(str(m) for m in messages)}"
                    for field, messages in form.errors.items()
                )
            )
        filters = scope_filters(user, form.cleaned_data)
        with translation.override(language or settings.LANGUAGE_CODE):
            export = usage_csv_export(filter_usage(filters))
        result = write_export(
            export.source,
            output=output,
            kind=Kind.USAGE_CSV,
            channel=Channel.COMMAND,
            user=user,
            filters=filters_for_audit(filters),
            stdout=self.stdout,
            stderr=self.stderr,
            progress_unit="rows",
        )
        if export.truncated:
            self.stderr.write(
                f"The file stops after {export.row_limit} rows (USAGE_EXPORT_MAX_ROWS): "
                "narrow the filters to get every row."
            )
        if output != "-":
            self.stderr.write(f"Wrote {result.rows:,} rows ({result.bytes:,} bytes) to {output}.")
