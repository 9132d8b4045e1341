"""Mixture sampling: group rates, sqrt-proportional inside a group, determinism and exact resumption."""

import itertools

import numpy as np
import pytest

from nanomolmo2.data.mixture import CHUNK, Mixture


def draws(mixture, n, start=0):
    return [(d, r) for _, d, r in itertools.islice(mixture.stream(start), n)]


def test_group_rates_and_sqrt_sizes():
    captions, small, large, text = range(100), range(100), range(400), range(50)
    mixture = Mixture([(0.6, [captions]), (0.3, [small, large]), (0.1, [text])], seed=0)
    counts = np.bincount([d for d, _ in draws(mixture, 20000)], minlength=4) / 20000
    # pointing group: sqrt(100) : sqrt(400) = 1 : 2 of its 30%
    assert counts == pytest.approx([0.6, 0.1, 0.2, 0.1], abs=0.015)


def test_every_row_once_per_epoch():
    data = range(37)
    rows = [r for _, r in draws(Mixture([(1.0, [data])], seed=3), 37 * 2)]
    assert sorted(rows[:37]) == list(range(37)) and sorted(rows[37:]) == list(range(37))
    assert rows[:37] != rows[37:]  # a new permutation each epoch


def test_deterministic_and_resumable_anywhere():
    mixture = Mixture([(0.5, [range(10), range(1000)]), (0.5, [range(7)])], seed=11)
    full = draws(mixture, 3 * CHUNK + 50)
    assert full == draws(Mixture([(0.5, [range(10), range(1000)]), (0.5, [range(7)])], seed=11), 3 * CHUNK + 50)
    for start in (1, 999, CHUNK, CHUNK + 1, 2 * CHUNK + 7):
        assert draws(mixture, 50, start) == full[start : start + 50]
    assert draws(Mixture([(0.5, [range(10), range(1000)]), (0.5, [range(7)])], seed=12), 100) != full[:100]


def test_empty_dataset_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        Mixture([(1.0, [range(3), []])])
