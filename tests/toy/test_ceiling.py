"""The exact ceiling of the binary task against brute force and Monte Carlo; the Gaussian task's ceiling."""

import itertools
from fractions import Fraction

import pytest
import torch

from qkcore.toy.ceiling import (
    bilinear_head_reference,
    binary_ceiling,
    binary_ceiling_fraction,
    expected_max_share,
    gaussian_bayes_error_bound,
    max_count_distribution,
    task_ceiling,
)
from qkcore.toy.task import PayloadTask, TaskConfig


def brute_force_bayes_accuracy(n_codes: int, context: int, n_payloads: int) -> Fraction:
    """Enumerate every context (codes, payloads) and target; the Bayes rule sees the target's code and picks the
    payload with the largest posterior mass (posterior uniform over positions with that code)."""
    total, count = Fraction(0), 0
    for codes in itertools.product(range(n_codes), repeat=context):
        for payloads in itertools.product(range(n_payloads), repeat=context):
            for target in range(context):
                matches = [i for i in range(context) if codes[i] == codes[target]]
                mass = {y: sum(payloads[i] == y for i in matches) for y in range(n_payloads)}
                best = max(mass.values())
                winners = [y for y, m in mass.items() if m == best]
                total += Fraction(int(payloads[target] in winners), len(winners))  # ties: uniform pick
                count += 1
    return total / count


@pytest.mark.parametrize("r1,r2,context,n_payloads", [(1, 1, 3, 2), (1, 1, 4, 3), (1, 2, 3, 3)])
def test_exact_ceiling_equals_brute_force(r1, r2, context, n_payloads):
    exact = binary_ceiling_fraction(r1, r2, context=context, n_payloads=n_payloads)
    assert exact == brute_force_bayes_accuracy(2 ** (r1 + r2), context, n_payloads)


def test_exact_ceiling_matches_monte_carlo_for_r1_3_r2_5():
    exact = binary_ceiling(3, 5)
    assert abs(exact - 0.97415) < 1e-5  # the "≈ 0.97" of the issue
    g = torch.Generator().manual_seed(0)
    n = 400_000
    codes = torch.randint(0, 2**8, (n, 16), generator=g)  # a full (z1, z2) sign code as an integer
    payloads = torch.randint(0, 10, (n, 16), generator=g)
    match = codes == codes[:, :1]  # position 0 is the target (positions are exchangeable)
    counts = torch.zeros(n, 10).scatter_add_(1, payloads, match.float())
    mc = (counts.max(-1).values / match.sum(-1)).mean().item()
    assert abs(mc - exact) < 4 * (exact * (1 - exact) / n) ** 0.5


def test_max_count_law():
    for m in (1, 2, 5, 16):
        law = max_count_distribution(m, 10)
        assert sum(law) == 1 and law[0] == (1 if m == 0 else 0)
    assert max_count_distribution(2, 10)[2] == Fraction(1, 10)
    assert expected_max_share(2, 10) == Fraction(11, 20)  # same payload (1/10) → 1, else → 1/2
    assert max_count_distribution(3, 1) == (0, 0, 0, 1)


def test_ceiling_grows_with_code_length_and_checks_arguments():
    values = [binary_ceiling(r, r) for r in (3, 5, 7)]
    assert values == sorted(values) and values[-1] < 1
    with pytest.raises(ValueError, match="r1"):
        binary_ceiling(0, 3)
    with pytest.raises(ValueError, match="kind"):
        task_ceiling(3, 3, "ternary")


def test_ideal_bilinear_head_is_bayes_optimal_on_binary_but_not_gaussian():
    assert abs(bilinear_head_reference(3, 5, "binary", n_samples=100_000) - binary_ceiling(3, 5)) < 0.002
    gauss = bilinear_head_reference(3, 3, "gaussian", n_samples=100_000)
    assert 0.75 < gauss < 0.81  # inner products cannot single out an equal Gaussian code
    assert task_ceiling(3, 3, "gaussian") == 1.0
    bound = gaussian_bayes_error_bound(PayloadTask(TaskConfig(r1=3, r2=3, kind="gaussian")))
    assert 0 < bound < 1e-3
