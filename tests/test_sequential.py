"""The group-sequential paired test (results/sequential.py) and its round loop (harness/sequential.py).

Simulations are vectorised with numpy on fixed seeds, 20,000 simulated comparisons per setting: paired
binary outcomes drawn round by round as multinomial counts of (A only, B only, same) pairs."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import optimize
from typer.testing import CliRunner

from lamp_bench.harness.cli import app
from lamp_bench.harness.config import ConfigError
from lamp_bench.harness.executors import JobSpec
from lamp_bench.harness.sequential import SequentialOptions, check_request, pool_order, run_until_decided
from lamp_bench.harness.suite import Episode
from lamp_bench.results import planning, sequential
from lamp_bench.results.store import EpisodeStore

SIMULATIONS = 20_000
ALPHA = 0.05
MONTE_CARLO = 2 * np.sqrt(ALPHA * (1 - ALPHA) / SIMULATIONS)  # two standard errors of a simulated rate
POWER_TOLERANCE = 0.03  # |simulated - planned| power where the budget holds >= 40 discordant pairs
CLI = [sys.executable, "-m", "lamp_bench.harness.cli"]


def simulate(looks, p_a_only, p_b_only, rng, spending="obrien-fleming"):
    """Decided (bool per simulation) and pairs at stopping of the test with looks after `looks` pairs."""
    sizes = np.diff([0, *looks])
    rounds = np.stack([rng.multinomial(m, [p_a_only, p_b_only, 1 - p_a_only - p_b_only], size=SIMULATIONS)
                       for m in sizes], axis=1)
    total = rounds.cumsum(axis=1)
    z = sequential.mcnemar_z(total[..., 0], total[..., 1])
    crossed = np.abs(z) >= sequential.boundaries(np.asarray(looks) / looks[-1], ALPHA, spending)
    decided = crossed.any(axis=1)
    stopped = np.where(decided, np.asarray(looks)[crossed.argmax(axis=1)], looks[-1])
    return decided, stopped


@pytest.mark.parametrize("spending", sequential.SPENDING)
def test_boundaries_spend_exactly_alpha_on_the_brownian_limit(spending):
    rng = np.random.default_rng(0)
    t = np.array([0.1, 0.25, 0.5, 0.7, 1.0])  # unequal rounds
    c = sequential.boundaries(t, ALPHA, spending)
    steps = rng.standard_normal((200_000, len(t))) * np.sqrt(np.diff([0, *t]))
    z = steps.cumsum(axis=1) / np.sqrt(t)
    first = np.abs(z) >= c
    assert abs(first.any(axis=1).mean() - ALPHA) < 0.002
    spent = np.diff([0, *sequential.spent(t, ALPHA, spending)])
    at_look = np.bincount(first.argmax(axis=1)[first.any(axis=1)], minlength=len(t)) / len(z)
    assert at_look == pytest.approx(spent, abs=0.0015)
    if spending == "obrien-fleming":
        assert c[0] == pytest.approx(1.959964 / np.sqrt(0.1), rel=1e-6)  # nothing crosses before look 1


@pytest.mark.parametrize("discordance, budget, looks", [(0.3, 500, 10), (0.1, 500, 10), (0.02, 500, 10),
                                                        (0.2, 100, 5), (0.05, 100, 5), (0.5, 60, 3)])
def test_type_one_error_at_most_alpha_under_the_null(discordance, budget, looks):
    rng = np.random.default_rng(1)
    decided, _ = simulate(planning.equal_looks(budget, looks), discordance / 2, discordance / 2, rng)
    assert decided.mean() <= ALPHA + MONTE_CARLO  # at or below alpha, up to simulation error


@pytest.mark.parametrize("delta, discordance, looks", [(0.05, 0.2, 5), (0.1, 0.3, 10), (0.03, 0.1, 5),
                                                       (0.2, 0.4, 1), (0.15, 0.2, 4)])
def test_power_and_expected_size_match_the_plan(delta, discordance, looks):
    plan = planning.sequential_pairs(delta, discordance, ALPHA, 0.8, looks)
    rng = np.random.default_rng(2)
    decided, stopped = simulate(planning.equal_looks(plan.budget, looks), (discordance + delta) / 2,
                                (discordance - delta) / 2, rng)
    if plan.budget * discordance >= 40:
        assert abs(decided.mean() - plan.power) <= POWER_TOLERANCE
        assert stopped.mean() == pytest.approx(plan.expected_n, rel=0.03)
    else:  # few discordant pairs: the normal limit is conservative, the real test only stronger
        assert decided.mean() >= plan.power - POWER_TOLERANCE
    assert plan.power >= 0.8


def test_sequential_costs_little_over_fixed_and_stops_early():
    fixed = planning.fixed_pairs(0.05, 0.2, ALPHA, 0.8)
    plan = planning.sequential_pairs(0.05, 0.2, ALPHA, 0.8, 5)
    assert fixed < plan.budget <= 1.05 * fixed  # O'Brien-Fleming: a few percent more at most
    assert plan.expected_n < 0.85 * fixed  # and it usually stops well before


def test_score_statistic_and_interval():
    b, c, n = 25, 10, 200
    assert sequential.score_z(b, c, n, 0.0) == pytest.approx((b - c) / np.sqrt(b + c))

    def loglik(q, delta):  # multinomial log-likelihood with P(A only) = q + delta, P(B only) = q
        return b * np.log(q + delta) + c * np.log(q) + (n - b - c) * np.log(1 - 2 * q - delta)
    for delta in (-0.1, 0.02, 0.2):
        best = optimize.minimize_scalar(lambda q: -loglik(q, delta), bounds=(max(0, -delta) + 1e-9,
                                        (1 - delta) / 2 - 1e-9), method="bounded", options={"xatol": 1e-12}).x
        assert sequential._restricted_p01(b, c, n, delta) == pytest.approx(best, abs=1e-6)
    low, high = sequential.score_interval(b, c, n, 1.96)
    assert sequential.score_z(b, c, n, low) == pytest.approx(1.96, abs=1e-6)
    assert sequential.score_z(b, c, n, high) == pytest.approx(-1.96, abs=1e-6)
    assert low < (b - c) / n < high
    # the interval excludes 0 exactly when |McNemar z| crosses the critical value
    for critical in (1.5, 2.5, 2.6):
        lo, hi = sequential.score_interval(b, c, n, critical)
        assert (lo > 0) == (sequential.mcnemar_z(b, c) >= critical)
    assert sequential.score_interval(0, 0, 10, 1.96)[0] < 0 < sequential.score_interval(0, 0, 10, 1.96)[1]


def test_decide_stops_at_the_first_crossing_and_round_trips(tmp_path):
    design = sequential.Design(budget=100, round_size=25)
    decision = sequential.Decision("a", "b", "s", design)
    counts = [(25, 10, 2), (50, 20, 2), (75, 21, 3)]
    sequential.decide(decision, counts, exhausted=False)
    assert decision.decided and decision.finished and decision.n == 50  # look 2 crossed; look 3 never happened
    assert decision.low > 0 and decision.p_value < ALPHA
    assert "decided at n=50" in decision.summary()
    path = sequential.save_decision(tmp_path, decision)
    assert path.name == "a-vs-b-s.json"
    assert sequential.load_decisions(tmp_path) == [decision]
    undecided = sequential.decide(sequential.Decision("a", "b", "s", design), [(25, 3, 2), (50, 5, 5)], exhausted=True)
    assert not undecided.decided and undecided.finished and undecided.low < 0 < undecided.high
    assert undecided.p_value > ALPHA and "undecided at the budget" in undecided.summary()


# --- the round loop, on the real store --------------------------------------------------------------------

def write(store, label, suite, outcomes):
    writer = store.writer()
    for (task, init, seed), success in outcomes.items():
        writer.append({"label": label, "policy": label, "suite": suite, "task_id": task, "init_index": init,
                       "seed": seed, "success": success, "status": "success" if success else "failure", "steps": 1})
    writer.close()


class ScriptedRounds:
    """An `execute` that writes each round's pending episodes to the store with outcomes given by a rule,
    as an executor would; it remembers the rounds it ran."""

    def __init__(self, rule):
        self.rule = rule
        self.rounds = []

    def __call__(self, spec):
        store = EpisodeStore(spec.results_dir)
        done = store.done_keys(spec.run_label)
        todo = {(e.task_id, e.init_index, e.seed): self.rule(e) for e in spec.episodes
                if (spec.run_label, e.suite, e.task_id, e.init_index, e.seed) not in done}
        self.rounds.append(sorted(todo))
        write(store, spec.run_label, spec.suite, todo)


def episodes(tasks=4, states=25, seed=0):
    return [Episode("fake", t, i, seed) for t in range(tasks) for i in range(states)]


def test_rounds_pair_in_a_fixed_order_stop_when_decided_and_resume(tmp_path):
    store = EpisodeStore(tmp_path)
    write(store, "base", "fake", {(e.task_id, e.init_index, e.seed): e.init_index % 2 == 0 for e in episodes()})
    spec = JobSpec(policy="p", suite="fake", episodes=episodes(), results_dir=str(tmp_path), label="new")
    better = ScriptedRounds(lambda e: e.init_index % 4 != 3)  # wins every odd state but one in two
    decision = run_until_decided(spec, SequentialOptions("base", budget=100, round_size=20), better)
    assert decision.decided and decision.n < 100
    assert [len(r) for r in better.rounds] == [20] * len(better.rounds)
    order = pool_order(episodes())
    for k, ran in enumerate(better.rounds):  # round k: the next 20 episodes of the fixed order
        assert ran == sorted((e.task_id, e.init_index, e.seed) for e in order[20 * k:20 * (k + 1)])
    assert 20 * len(better.rounds) == decision.n
    assert {t for t, _, _ in better.rounds[0]} == {0, 1, 2, 3}  # every round covers every task
    saved = sequential.load_decisions(tmp_path)
    assert saved == [decision]
    again = ScriptedRounds(better.rule)  # a re-run replays the looks from the store and runs nothing
    assert run_until_decided(spec, SequentialOptions("base", budget=100, round_size=20), again) == decision
    assert again.rounds == []
    with pytest.raises(ConfigError, match="resume with the same"):
        run_until_decided(spec, SequentialOptions("base", budget=100, round_size=10), again)


def test_no_difference_runs_to_the_budget_undecided(tmp_path):
    store = EpisodeStore(tmp_path)
    write(store, "base", "fake", {(e.task_id, e.init_index, e.seed): e.init_index < 12 for e in episodes()})
    spec = JobSpec(policy="p", suite="fake", episodes=episodes(), results_dir=str(tmp_path), label="same")
    same = ScriptedRounds(lambda e: (e.init_index < 12) != (e.init_index in (3, 20)))  # swaps a win and a loss
    decision = run_until_decided(spec, SequentialOptions("base", round_size=30), same)
    assert not decision.decided and decision.finished and decision.n == 100  # the pool: 4 tasks x 25 states
    assert [look.n for look in decision.looks] == [30, 60, 90, 100]
    assert decision.low < 0 < decision.high


def test_baseline_must_be_in_the_results(tmp_path):
    check_request(None, None, tmp_path)
    with pytest.raises(ConfigError, match="needs --against"):
        check_request("decided", None, tmp_path)
    with pytest.raises(ConfigError, match="--until accepts decided"):
        check_request("forever", "base", tmp_path)
    with pytest.raises(ConfigError, match="add --until decided"):
        check_request(None, "base", tmp_path)
    with pytest.raises(ConfigError, match="no episodes of that label"):
        check_request("decided", "base", tmp_path)
    write(EpisodeStore(tmp_path), "base", "other", {(0, 0, 0): True})
    spec = JobSpec(policy="p", suite="fake", episodes=episodes(), results_dir=str(tmp_path), label="new")
    with pytest.raises(ConfigError, match="has none of this run's episodes"):
        run_until_decided(spec, SequentialOptions("base"), ScriptedRounds(lambda e: True))


def test_cli_until_decided_bad_input_is_one_line(tmp_path):
    base = ["run", "--suite", "libero_spatial", "--policy", "noop", "--out", str(tmp_path)]
    for extra, expected in [(["--until", "decided", "--against", "openvla"], "no episodes of that label"),
                            (["--until", "decided"], "needs --against"),
                            (["--against", "openvla"], "add --until decided")]:
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def fake(request):
    """The simulator-free suite "fake" and policy "scripted" (tests/plugins/fake_suite.py)."""
    try:
        request.getfixturevalue("fake_plugins")
    except pytest.FixtureLookupError:
        pytest.skip("needs the fake_plugins fixture (tests/plugins/fake_suite.py)")


def test_until_decided_through_the_real_executor(tmp_path, fake):
    """The real inline executor on the fake suite: the baseline wins the even init states, the new run
    every one of them (the suite decides success), so the new run wins every odd state."""
    from lamp_bench.harness.executors import run_inline
    from lamp_bench.harness.sequential import executor_function

    pool = [Episode("fake", t, i, 0) for t in range(4) for i in range(30)]
    base = JobSpec(policy="scripted", suite="fake", episodes=pool, results_dir=str(tmp_path), label="base",
                   suite_kwargs={"tasks": 4, "init_states": 30, "succeed": "even"})
    run_inline([base])
    new = JobSpec(**{**base.__dict__, "label": "new", "suite_kwargs": {**base.suite_kwargs, "succeed": "all"}})
    decision = run_until_decided(new, SequentialOptions("base", round_size=12), executor_function("inline", 1, tmp_path))
    # look 2 (24 pairs, 12 won by new only): z = 3.46 < 4.38; look 3 (36 pairs, 16): z = 4 > 3.58
    assert decision.decided and decision.n == 36 and decision.diff == pytest.approx(16 / 36)
    ran = {(r["task_id"], r["init_index"]) for r in EpisodeStore(tmp_path).records() if r["label"] == "new"}
    assert ran == {(e.task_id, e.init_index) for e in pool_order(pool)[:36]}  # stopped after three rounds


def test_cli_run_until_decided_end_to_end(tmp_path, fake):
    common = ["run", "--suite", "fake", "--policy", "scripted", "--out", str(tmp_path), "--envs-per-worker", "1"]
    assert CliRunner().invoke(app, [*common, "--label", "base"]).exit_code == 0
    result = CliRunner().invoke(app, [*common, "--label", "same", "--until", "decided", "--against", "base",
                                      "--round-size", "3"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "sequential" / "same-vs-base-fake.json").read_text())
    assert not data["decided"] and data["finished"] and [look["n"] for look in data["looks"]] == [3, 6, 8]
    assert "undecided at the budget (8 of 8 pairs)" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LAMP_BENCH_LIBERO_ASSETS"), reason="set LAMP_BENCH_LIBERO_ASSETS")
def test_run_until_decided_end_to_end(tmp_path):
    """The cheapest real path: noop (never succeeds) as the baseline, then the oracle until decided."""
    common = ["--suite", "libero_spatial", "--tasks", "0", "--episodes-per-task", "6", "--out", str(tmp_path),
              "--envs-per-worker", "1"]
    subprocess.run([*CLI, "run", "--policy", "noop", *common], check=True, capture_output=True, timeout=1800)
    result = subprocess.run([*CLI, "run", "--policy", "oracle", *common, "--until", "decided", "--against", "noop",
                             "--round-size", "2"], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "sequential" / "oracle-vs-noop-libero_spatial.json").read_text())
    assert data["decided"] and data["looks"][-1]["n"] == 6 and data["low"] > 0
    assert "decided at n=6" in result.stderr


def test_report_shows_each_decision(tmp_path):
    from lamp_bench.reports import build_report, layouts

    store = EpisodeStore(tmp_path)
    write(store, "base", "fake", {(e.task_id, e.init_index, e.seed): e.init_index % 2 == 0 for e in episodes()})
    spec = JobSpec(policy="p", suite="fake", episodes=episodes(), results_dir=str(tmp_path), label="new")
    decision = run_until_decided(spec, SequentialOptions("base", budget=100, round_size=20),
                                 ScriptedRounds(lambda e: e.init_index % 4 != 3))
    [section] = layouts.sequential_sections(tmp_path)
    [table] = section.tables
    assert table.key.endswith("_differences") and "differences vs base" in table.title
    [row] = table.rows
    cell = row.cells[0]
    assert cell.decided is True and cell.significant and (cell.low, cell.high) == (decision.low, decision.high)
    assert section.notes == [decision.summary()] and f"decided at n={decision.n}" in section.notes[0]
    [csv] = build_report(tmp_path, tmp_path / "report", formats="csv")
    text = csv.read_text()
    assert "sequential_0_differences" in text and "new − base" in text
