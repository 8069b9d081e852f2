"""Indexes for the audit trail's filters: each is (filter column, id), so a
filtered page is one index range scan in id order however long the trail."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("governance", "0004_review_request_decision")]

    operations = [
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["actor_username", "id"], name="audit_actor_username_id"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["model_name", "id"], name="audit_model_id"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["outcome", "id"], name="audit_outcome_id"),
        ),
    ]
