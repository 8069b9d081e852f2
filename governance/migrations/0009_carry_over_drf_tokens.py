"""Carry the keys of DRF's authtoken table over to ApiToken, hashed, then
drop that table: it held every key in plain text. Each carried key becomes
a full-access token named "carried over", so existing clients keep working.

The authtoken app is no longer installed, so its table is read with plain
SQL, and only where it exists (a fresh database never had it)."""

import hashlib

from django.db import migrations

OLD_TABLE = "authtoken_token"


def carry_over(apps, schema_editor):
    connection = schema_editor.connection
    if OLD_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("governance", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {OLD_TABLE}")
        rows = cursor.fetchall()
    ApiToken.objects.bulk_create(
        ApiToken(
            user_id=user_id,
            name="carried over",
            key_hash=hashlib.sha256(key.encode()).hexdigest(),
            prefix=key[:8],
            created_at=created,
        )
        for key, user_id, created in rows
    )
    schema_editor.execute(f"DROP TABLE {OLD_TABLE}")


class Migration(migrations.Migration):
    dependencies = [("governance", "0008_api_token")]

    # Backwards leaves the tokens as they are: the plain keys are gone for good.
    operations = [migrations.RunPython(carry_over, migrations.RunPython.noop)]
