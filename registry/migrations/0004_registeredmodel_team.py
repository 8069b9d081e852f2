import django.db.models.deletion
from django.db import migrations, models

DEFAULT_TEAM = "default"


def move_models_to_default_team(apps, schema_editor):
    """Every existing model goes to the team `default`; every user who held
    the global engineer role joins it as a maintainer, so that nobody loses
    what they could do before teams existed (an admin then splits teams)."""
    RegisteredModel = apps.get_model("registry", "RegisteredModel")
    Team = apps.get_model("governance", "Team")
    TeamMembership = apps.get_model("governance", "TeamMembership")
    User = apps.get_model("auth", "User")
    if not RegisteredModel.objects.exists() and not User.objects.filter(groups__name="engineer").exists():
        return
    team, _ = Team.objects.get_or_create(name=DEFAULT_TEAM)
    RegisteredModel.objects.filter(team__isnull=True).update(team=team)
    for user in User.objects.filter(groups__name="engineer").distinct():
        TeamMembership.objects.get_or_create(team=team, user=user, defaults={"role": "maintainer"})


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0003_modelversion_inference_backend"),
        ("governance", "0011_teams"),
    ]

    operations = [
        migrations.AddField(
            model_name="registeredmodel",
            name="team",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="models",
                to="governance.team",
            ),
        ),
        migrations.RunPython(move_models_to_default_team, migrations.RunPython.noop),
    ]
