"""Generic estimators on constructed data with known answers: a known drift, a known null, clustered data
where a naive test is overconfident and the clustered one is not, shared baselines, multiplicity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from contagion.analysis.estimators import (
    PAIRING_SHARE,
    baseline_variance,
    benjamini_hochberg,
    discordance,
    discordant_variance,
    holm,
    mixed_model,
    naive_one_sample,
    one_sample,
    paired_score_interval,
    t_interval,
    tost,
    two_sample,
)


def clustered(rng: np.random.Generator, games: int, per_game: int, mean: float, game_sd: float,
              agent_sd: float) -> tuple[np.ndarray, np.ndarray]:
    """Values with a shared per-game effect (agents of one game are correlated)."""
    game_effect = rng.normal(0, game_sd, games)
    values = mean + np.repeat(game_effect, per_game) + rng.normal(0, agent_sd, games * per_game)
    return values, np.repeat(np.arange(games), per_game)


# -- multiplicity -------------------------------------------------------------------------------------


def test_holm_and_bh_match_statsmodels() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.20, 0.001, 0.5])
    assert np.allclose(holm(p), multipletests(p, method="holm")[1])
    assert np.allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1])
    rng = np.random.default_rng(7)
    for m in (1, 2, 5, 17, 40):  # ties, values near 1 and the cap included
        q = np.round(rng.uniform(0, 1, m) ** 3, 2)
        assert np.allclose(holm(q), multipletests(q, method="holm")[1])
    with_nan = holm([0.01, math.nan, 0.02])
    assert math.isnan(with_nan[1]) and np.allclose(with_nan[[0, 2]], [0.02, 0.02])


# -- one condition: post − pre --------------------------------------------------------------------------


def test_known_drift_is_recovered_with_a_covering_interval() -> None:
    rng = np.random.default_rng(1)
    values, games = clustered(rng, games=30, per_game=3, mean=0.10, game_sd=0.05, agent_sd=0.05)
    est = one_sample(values, games, resamples=2000, seed=3)
    assert est.estimate == pytest.approx(0.10, abs=0.03)
    assert est.ci_low < 0.10 < est.ci_high
    assert est.p < 0.001
    assert est.n_games == 30 and est.n_agents == 90 and est.df == 29
    assert "cluster-robust" in est.test and "t 95% CI" in est.ci_method
    # the interval is the test's own: estimate ± t(0.975; G − 1)·SE; the cluster bootstrap is kept aside
    assert est.ci_low == pytest.approx(est.estimate - 2.0452 * est.se, abs=1e-4)
    low, high = est.extra["boot_ci"]
    assert low < est.estimate < high
    assert est.effect > 1  # d_z: a large standardized drift


def test_known_null_clustered_test_is_calibrated_naive_is_overconfident() -> None:
    """Agents of a game share a large game effect: the agent-level t-test sees 36 units where there are 12."""
    rng = np.random.default_rng(7)
    trials = 400
    naive = clustered_fp = 0
    for _ in range(trials):
        values, games = clustered(rng, games=12, per_game=3, mean=0.0, game_sd=1.0, agent_sd=0.3)
        naive += naive_one_sample(values).p < 0.05
        clustered_fp += one_sample(values, games, resamples=0).p < 0.05
    print(f"false-positive rate over {trials} null datasets: naive {naive / trials:.3f}, "
          f"clustered {clustered_fp / trials:.3f}")
    assert naive / trials > 0.15
    assert clustered_fp / trials <= 0.08


def test_clustered_interval_is_wider_than_the_naive_one_on_clustered_data() -> None:
    rng = np.random.default_rng(11)
    values, games = clustered(rng, games=15, per_game=3, mean=0.0, game_sd=1.0, agent_sd=0.2)
    naive = naive_one_sample(values)
    est = one_sample(values, games, resamples=2000, seed=0)
    assert (est.ci_high - est.ci_low) > 1.3 * (naive.ci_high - naive.ci_low)


def test_identical_replays_count_as_one_game() -> None:
    values = np.array([0.2, 0.2, 0.2, 0.1, 0.3])
    est = one_sample(values, ["a", "a", "a", "b", "c"], resamples=0)
    assert est.n_games == 3 and est.df == 2


def test_shared_baseline_error_is_added_to_a_single_condition() -> None:
    """Two baseline measurements shared by every agent: their error does not average out over games."""
    rng = np.random.default_rng(5)
    trials = 300
    ignored = added = 0
    for _ in range(trials):
        baseline_error = rng.normal(0, 0.02, 2)  # the pre-play measurement of each of two prompts
        games, seats = 10, 2
        post = rng.normal(0, 0.02, games * seats)  # measurement noise of each post-play reading
        seat = np.tile(np.arange(seats), games)
        drift = post - baseline_error[seat]
        game = np.repeat(np.arange(games), seats)
        ignored += one_sample(drift, game, resamples=0).p < 0.05
        added += one_sample(drift, game, baseline_var=baseline_variance(post, seat), resamples=0).p < 0.05
    print(f"false positives with the baseline error ignored {ignored / trials:.3f}, added {added / trials:.3f}")
    assert ignored / trials > 0.25
    assert added / trials <= 0.07


def test_baseline_variance_of_one_shared_baseline_is_the_post_variance() -> None:
    post = np.array([0.1, 0.3, 0.2, 0.4])
    assert baseline_variance(post, ["k"] * 4) == pytest.approx(np.var(post, ddof=1))
    # two baselines, two agents each: (1/2)² σ²₁ + (1/2)² σ²₂
    assert baseline_variance(np.array([0.0, 1.0, 0.0, 3.0]), ["a", "a", "b", "b"]) == pytest.approx(
        0.25 * 0.5 + 0.25 * 4.5)


# -- two conditions -----------------------------------------------------------------------------------


def test_known_difference_between_conditions_is_recovered() -> None:
    rng = np.random.default_rng(2)
    a, ga = clustered(rng, 20, 2, mean=-0.10, game_sd=0.03, agent_sd=0.03)
    b, gb = clustered(rng, 20, 2, mean=0.0, game_sd=0.03, agent_sd=0.03)
    values = np.concatenate([a, b])
    arm = np.r_[np.ones(a.size, bool), np.zeros(b.size, bool)]
    games = np.r_[ga, gb + 100]
    est = two_sample(values, arm, games, resamples=2000, seed=1)
    assert est.estimate == pytest.approx(-0.10, abs=0.03)
    assert est.ci_low < -0.10 < est.ci_high and est.p < 0.001
    assert est.extra["games_a"] == 20 and est.extra["games_b"] == 20
    mixed = mixed_model(values, arm, games)
    assert mixed is not None and mixed["estimate"] == pytest.approx(-0.10, abs=0.03) and mixed["p"] < 0.001


def test_pairing_by_baseline_removes_the_shared_baseline_error() -> None:
    """Arm A measures seats 0 and 1, arm B seats 0, 1 and 2 (like a malicious third seat that is not
    measured): seat 2's baseline error biases the plain difference but cancels when paired by baseline."""
    rng = np.random.default_rng(9)
    trials = 300
    plain = paired = 0
    for _ in range(trials):
        err = rng.normal(0, 0.03, 3)
        rows = []
        for arm, seats in ((True, (0, 1)), (False, (0, 1, 2))):
            for g in range(10):
                for s in seats:
                    rows.append((arm, f"{arm}-{g}", s, rng.normal(0, 0.01) - err[s]))
        arm_v, game_v, seat_v, drift_v = (np.array(c) for c in zip(*rows, strict=True))
        plain += two_sample(drift_v, arm_v, game_v, resamples=0).p < 0.05
        paired += two_sample(drift_v, arm_v, game_v, baselines=seat_v, resamples=0).p < 0.05
    print(f"false positives: plain difference {plain / trials:.3f}, paired by baseline {paired / trials:.3f}")
    assert plain / trials > 0.3
    assert paired / trials <= 0.08


# -- common seeds: linked clusters and pairing by seed ----------------------------------------------------


def seeded_grid(rng: np.random.Generator, seeds: int, diff: float, seed_sd: float = 0.1, agent_sd: float = 0.01,
                cells: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two arms played on common seeds: every seed plays ``cells`` games (game types) in each arm, and a seed's
    effect is shared by all of them (as a grid's common seeds share random draws). (values, arm, game, seed)."""
    rows = []
    for s in range(seeds):
        g = rng.normal(0, seed_sd)
        for cell in range(cells):
            for arm in (True, False):
                for _agent in range(2):
                    rows.append((g + (diff if arm else 0.0) + rng.normal(0, agent_sd), arm, f"{s}-{cell}-{arm}", s))
    v, a, game, seed = (np.array(c) for c in zip(*rows, strict=True))
    return v.astype(float), a.astype(bool), game, seed


def test_one_sample_on_games_a_seed_links_is_calibrated_on_single_games_it_is_not() -> None:
    rng = np.random.default_rng(5)
    trials, on_games, on_seeds = 300, 0, 0
    for _ in range(trials):
        v, a, game, seed = seeded_grid(rng, 8, 0.0)
        on_games += one_sample(v[a], game[a], resamples=0).p < 0.05
        on_seeds += one_sample(v[a], seed[a], resamples=0).p < 0.05
    print(f"false positives: clustered on games {on_games / trials:.3f}, on linked games {on_seeds / trials:.3f}")
    assert on_games / trials > 0.2
    assert on_seeds / trials <= 0.08


def test_pairing_by_seed_cancels_what_a_seed_shares() -> None:
    rng = np.random.default_rng(6)
    v, a, _, seed = seeded_grid(rng, 8, 0.02)
    paired = two_sample(v, a, seed, baselines=np.zeros(v.size), pairs=seed, resamples=0)
    unpaired = two_sample(v, a, seed, baselines=np.zeros(v.size), resamples=0)
    assert paired.extra["paired_by_seed"] and not unpaired.extra["paired_by_seed"]
    assert paired.estimate == pytest.approx(0.02, abs=0.005) and paired.p < 0.001
    assert paired.se < unpaired.se / 5 and unpaired.p > 0.05  # the seed effect swamps the unpaired difference
    assert paired.n_games == 8 and paired.df == 7  # linked clusters are not split by arm
    assert "seed" in paired.test
    # calibrated under the null
    trials, fp = 300, 0
    for _ in range(trials):
        v, a, _, seed = seeded_grid(rng, 8, 0.0)
        fp += two_sample(v, a, seed, baselines=np.zeros(v.size), pairs=seed, resamples=0).p < 0.05
    assert fp / trials <= 0.08


def test_pairing_by_seed_applies_only_where_the_arms_share_their_seeds() -> None:
    rng = np.random.default_rng(7)
    v, a, _, seed = seeded_grid(rng, 10, 0.02)
    # arm B lost seeds 0..4: the shared strata keep half of the agents, under PAIRING_SHARE
    keep = a | (seed >= 5)
    est = two_sample(v[keep], a[keep], seed[keep], baselines=np.zeros(keep.sum()), pairs=seed[keep], resamples=0)
    assert PAIRING_SHARE > 0.5 and not est.extra["paired_by_seed"] and est.n_agents == keep.sum()
    # one seed lost of ten: still paired, the unshared seed drops out
    keep = a | (seed >= 1)
    est = two_sample(v[keep], a[keep], seed[keep], baselines=np.zeros(keep.sum()), pairs=seed[keep], resamples=0)
    assert est.extra["paired_by_seed"] and est.n_agents == int(keep.sum()) - int((a & (seed == 0)).sum())


def test_tost_shows_equivalence_only_when_the_interval_fits_in_the_margin() -> None:
    assert tost(0.001, 0.002, 20, 0.02) < 0.001  # tight and near 0: the same
    assert tost(0.001, 0.02, 20, 0.02) > 0.15  # too noisy to say
    assert tost(0.03, 0.002, 20, 0.02) > 0.99  # clearly outside the margin
    assert tost(0.0, 0.0, 20, 0.02) == 0.0 and tost(0.05, 0.0, 20, 0.02) == 1.0  # no variation at all
    assert math.isnan(tost(0.0, 0.01, 0, 0.02))
    low, high = t_interval(0.1, 0.02, 5)
    assert (low, high) == pytest.approx((0.1 - 2.5706 * 0.02, 0.1 + 2.5706 * 0.02), abs=1e-4)


# -- paired actions: the discordance-scaled interval ------------------------------------------------------------


@pytest.mark.parametrize(("down", "up", "pairs"), [(17, 7, 360), (3, 0, 50), (0, 5, 40), (30, 30, 100)])
def test_discordance_is_the_restricted_maximum_likelihood(down: int, up: int, pairs: int) -> None:
    """The closed form against a numerical maximisation of the paired-outcome likelihood under p₊ − p₋ = d, and
    at d = 0 the discordance seen (so the interval's scale is 1 where the t-test decides)."""
    from scipy.optimize import minimize_scalar

    assert float(discordance(down, up, pairs, 0.0)) == pytest.approx((down + up) / pairs)
    for d in (-0.2, -0.05, 0.01, 0.1, 0.3):
        lo, hi = max(0.0, -d) + 1e-12, (1 - d) / 2 - 1e-12

        def nll(x: float, d: float = d) -> float:
            return -(up * math.log(x + d) + down * math.log(x) + (pairs - up - down) * math.log(1 - 2 * x - d)) \
                if down else -(up * math.log(x + d) + (pairs - up) * math.log(1 - 2 * x - d))

        x = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}).x
        assert float(discordance(down, up, pairs, d)) == pytest.approx(2 * x + d, abs=1e-6), d
        assert float(discordant_variance(down, up, pairs, d)) == pytest.approx(2 * x + d - d * d, abs=1e-6)
    assert math.isnan(float(discordance(down, up, pairs, 1.0)))


def test_the_discordance_scaled_interval_is_the_set_its_test_keeps() -> None:
    """On random inputs: both ends keep |est − d| ≤ t·SE·√(q(d)/q̂) just inside and fail it just outside, and the
    interval excludes 0 exactly when the t-test rejects (the p-value is the t-test's)."""
    from scipy.stats import t as tdist

    rng = np.random.default_rng(7)
    for _ in range(200):
        pairs = int(rng.integers(20, 500))
        down, up = (int(v) for v in rng.integers(0, max(2, pairs // 8), 2))
        if down + up == 0:
            continue
        df = int(rng.integers(2, 12))
        est = (up - down) / pairs + float(rng.normal(0, 0.01))
        se = float(rng.uniform(0.2, 2.0)) * math.sqrt((down + up) / pairs) / math.sqrt(pairs / 6)
        low, high = paired_score_interval(est, se, df, down, up, pairs)
        crit = float(tdist.ppf(0.975, df))

        def kept(d: float, est: float = est, se: float = se, down: int = down, up: int = up,
                 pairs: int = pairs, crit: float = crit) -> bool:
            q = float(discordance(down, up, pairs, d))
            return abs(est - d) <= crit * se * math.sqrt(q / ((down + up) / pairs))

        assert low <= est <= high
        for end, outward in ((low, -1e-6), (high, 1e-6)):
            if abs(end) < 1 - 1e-6:
                assert kept(end - outward) and not kept(end + outward), (down, up, pairs, est, se, end)
        p = 2 * tdist.sf(abs(est / se), df)
        assert (low > 0 or high < 0) == (p < 0.05)


def test_without_discordance_the_interval_is_the_score_tests() -> None:
    """No pair differs: SE 0 and no t interval; the paired score test keeps |d| ≤ t²/(n + t²)."""
    from scipy.stats import t as tdist

    crit = float(tdist.ppf(0.975, 5))
    low, high = paired_score_interval(0.0, 0.0, 5, 0, 0, 200)
    assert (low, high) == pytest.approx((-crit**2 / (200 + crit**2), crit**2 / (200 + crit**2)))
    assert all(math.isnan(v) for v in paired_score_interval(0.0, math.nan, 0, 3, 1, 100))  # no test: no interval
    assert paired_score_interval(0.1, 0.02, 5, 0, 0, 0) == t_interval(0.1, 0.02, 5)  # no pairs: the t interval


def test_rare_flips_on_few_clusters_the_scaled_interval_covers_where_t_misses_one_sided() -> None:
    """2,000 draws of SIT's protection difference in miniature: 6 seeds of 60 paired actions, each pair flipping
    toward less defection with probability 0.03 and toward more with 0.01, the rates varying by seed (a gamma factor
    of mean 1 and shape 2), so a seed's difference is a net count of a few rare flips whose spread grows with their
    number. The t interval misses mostly on one side — its SE is small exactly when few flips were seen, and then
    the estimate is near 0, between the truth and zero — and covers under 0.93 (0.914 here); the
    discordance-scaled interval covers in the band (0.945). It does not cure every shape: with flip rates 0.04 and
    0.015 varying more between seeds (gamma shape 1) it reads 0.938 where t reads 0.906, its misses still 119 on
    zero's side to 5 beyond the truth."""
    from scipy.stats import t as tdist

    rng = np.random.default_rng(2026)
    seeds, m, draws = 6, 60, 2000
    p_down, p_up = 0.03, 0.01
    truth = p_up - p_down
    crit = float(tdist.ppf(0.975, seeds - 1))
    miss_t = [0, 0]
    miss_s = [0, 0]
    for _ in range(draws):
        scale = rng.gamma(2.0, 0.5, seeds)  # seed-level rates, mean 1
        down = rng.binomial(m, np.minimum(p_down * scale, 1))
        up = rng.binomial(m, np.minimum(p_up * scale, 1))
        diffs = (up - down) / m
        est = float(diffs.mean())
        se = float(diffs.std(ddof=1) / math.sqrt(seeds))
        t_lo, t_hi = (est - crit * se, est + crit * se) if se > 0 else (est, est)
        s_lo, s_hi = paired_score_interval(est, se, seeds - 1, int(down.sum()), int(up.sum()), seeds * m)
        for (lo, hi), miss in (((t_lo, t_hi), miss_t), ((s_lo, s_hi), miss_s)):
            miss[0] += hi < truth
            miss[1] += lo > truth
    cover_t, cover_s = 1 - sum(miss_t) / draws, 1 - sum(miss_s) / draws
    print(f"t: {cover_t:.3f} (below {miss_t[0]}, above {miss_t[1]}); scaled: {cover_s:.3f} {miss_s}")
    assert cover_t < 0.93 and miss_t[1] > 5 * miss_t[0]
    assert 0.93 <= cover_s <= 0.97
