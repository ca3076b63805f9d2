from django.db import migrations

from exports.csvfile import CSV_SQL_FUNCTIONS


class Migration(migrations.Migration):
    """Re-create the CSV cell functions in their inlinable form (about 10x faster per cell)."""

    dependencies = [("exports", "0002_csv_sql_functions")]

    operations = [migrations.RunSQL(CSV_SQL_FUNCTIONS, migrations.RunSQL.noop)]
