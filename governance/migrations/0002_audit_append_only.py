"""The database itself refuses UPDATE, DELETE and TRUNCATE on the audit trail.

PostgreSQL: row triggers for UPDATE/DELETE and a statement trigger for
TRUNCATE. SQLite (the embedded demo): row triggers (it has no TRUNCATE).
"""

from django.db import migrations

POSTGRES_FORWARD = """
CREATE OR REPLACE FUNCTION glassbox_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'governance_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER auditevent_no_update_delete BEFORE UPDATE OR DELETE ON governance_auditevent
    FOR EACH ROW EXECUTE FUNCTION glassbox_audit_append_only();
CREATE TRIGGER auditevent_no_truncate BEFORE TRUNCATE ON governance_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION glassbox_audit_append_only();
"""
POSTGRES_BACKWARD = """
DROP TRIGGER IF EXISTS auditevent_no_update_delete ON governance_auditevent;
DROP TRIGGER IF EXISTS auditevent_no_truncate ON governance_auditevent;
DROP FUNCTION IF EXISTS glassbox_audit_append_only();
"""
SQLITE_FORWARD = [
    """CREATE TRIGGER auditevent_no_update BEFORE UPDATE ON governance_auditevent
       BEGIN SELECT RAISE(ABORT, 'governance_auditevent is append-only: UPDATE refused'); END;""",
    """CREATE TRIGGER auditevent_no_delete BEFORE DELETE ON governance_auditevent
       BEGIN SELECT RAISE(ABORT, 'governance_auditevent is append-only: DELETE refused'); END;""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS auditevent_no_update;",
    "DROP TRIGGER IF EXISTS auditevent_no_delete;",
]


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_FORWARD, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)
    else:
        raise RuntimeError(f"Glassbox supports PostgreSQL and SQLite, not {vendor}.")


def backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_BACKWARD, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_BACKWARD:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("governance", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
