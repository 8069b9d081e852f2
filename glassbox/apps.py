from django.apps import AppConfig


class GlassboxConfig(AppConfig):
    # The project package is an app only so that Django finds the commands that
    # span every domain app (seed_demo); it has no models and no migrations.
    name = "glassbox"
    verbose_name = "Glassbox platform"
