import pytest

from tests.security import corpus


@pytest.fixture(scope="module")
def corpus_summary(request):
    """Prints the attack corpus tally (and keeps it as JSON) after the module."""
    yield
    corpus.print_summary(request.config, corpus.write_summary())
