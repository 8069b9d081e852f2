"""What the registry announces about stored files, for the apps that act on
it (the registry knows nothing of alerts; rollouts listens)."""

from django.dispatch import Signal

# A fetched artifact or dataset did not hash to its registered digest and was
# refused. sender: "models" | "datasets"; key, sha256 (registered), found (actual).
artifact_refused = Signal()
# A fetched file matched its digest (a refused one may have been restored).
artifact_verified = Signal()
