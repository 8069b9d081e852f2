from django.apps import AppConfig


class GlassboxConfig(AppConfig):
    # The project package is an app so that Django finds the commands that
    # span every domain app (seed_demo) and its one plumbing table
    # (idempotency keys); it holds no domain rules.
    name = "glassbox"
    verbose_name = "Glassbox platform"
