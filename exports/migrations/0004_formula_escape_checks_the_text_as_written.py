from django.db import migrations

from exports.csvfile import CSV_SQL_FUNCTIONS


class Migration(migrations.Migration):
    """Re-create the CSV cell functions: hub_csv_text also checks the text as written, not only
    its NFKC form (which composes "=" and U+0338 into U+2260)."""

    dependencies = [("exports", "0003_inlinable_csv_functions")]

    operations = [migrations.RunSQL(CSV_SQL_FUNCTIONS, migrations.RunSQL.noop)]
