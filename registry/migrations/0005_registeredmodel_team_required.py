import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    # Apart from 0004: PostgreSQL will not alter a table with the data
    # migration's foreign-key checks still pending in the same transaction.
    dependencies = [("registry", "0004_registeredmodel_team")]

    operations = [
        migrations.AlterField(
            model_name="registeredmodel",
            name="team",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="models", to="governance.team"
            ),
        ),
    ]
