from django.db import migrations

from exports.csvfile import CSV_SQL_FUNCTIONS, DROP_CSV_SQL_FUNCTIONS


class Migration(migrations.Migration):
    """The SQL functions that format usage-log CSV cells inside COPY (see exports/csvfile.py).
    CREATE OR REPLACE: a later change to the rule ships as a new migration running the same."""

    dependencies = [("exports", "0001_initial")]

    operations = [migrations.RunSQL(CSV_SQL_FUNCTIONS, DROP_CSV_SQL_FUNCTIONS)]
