"""The optimization loop (agent/loop.py), one stage at a time: its specification.

Every test drives the real loop (`run_stage`) with the scripted proposer; the evaluator and profiler hooks
stand in for the worker and ncu (tests/fakes.py), so a stage takes milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeEvaluator, FakeProfiler, Quiet, fake_settings, timed

from agent.llm.client import BudgetExhausted
from agent.loop import Best, LoopOutcome, StartingKernelRejected, run_stage
from agent.problem import load_problem
from agent.profiling.step import ProfileOutcome
from agent.prompt.stages import Stage, StageConstraints, load_stage
from agent.proposers.base import ProposalContext, proposer_class
from agent.proposers.scripted import ScriptedProposer
from agent.records import Candidate, EvalResult, Status
from agent.store import Store

ROOT = Path(__file__).resolve().parent.parent
SPEC = load_problem(ROOT / "kernels" / "l1_norm")
START = SPEC.kernel_path.read_text()


def variant(n: int) -> str:
    """A candidate that keeps the stage's generic rules (it parses, defines ModelNew and a kernel)."""
    return f"{START}\n# variant {n}\n"


V1, V2, V3, V4, V5 = (variant(n) for n in range(1, 6))


@pytest.fixture
def stage() -> Stage:
    """A stage with no rules of its own: only the generic ones apply."""
    return load_stage("algorithmic").model_copy(update={"constraints": StageConstraints()})


class Run:
    def __init__(self, out: LoopOutcome, store: Store, reporter: Quiet):
        self.out, self.store, self.reporter = out, store, reporter

    def rows(self) -> list[tuple[str, Status, int | None]]:
        """(label, status, parent candidate) of every recorded candidate, in order."""
        rows = self.store.conn.execute(
            "SELECT c.label, c.parent_id, e.result FROM candidates c JOIN evaluations e "
            "ON e.candidate_id = c.id ORDER BY c.id"
        ).fetchall()
        return [(r[0], EvalResult.model_validate_json(r[2]).status, r[1]) for r in rows]


def run(tmp_path, stage, proposer, evaluator, profiler=None, start: Best | None = None, **policy) -> Run:
    store = Store.open_dir(tmp_path)
    run_id = store.start_run("l1_norm", "cuda", "H200", proposer.name, None, {})
    reporter = Quiet()
    settings = fake_settings(stage, tmp_path, evaluator, profiler, **policy)
    out = run_stage(SPEC, START, proposer, store, run_id, settings, reporter, start=start)
    return Run(out, store, reporter)


# --- the start ------------------------------------------------------------------------------------------


def test_the_starting_kernel_is_evaluated_and_profiled_before_the_first_proposal(tmp_path, stage):
    evaluator, profiler, proposer = FakeEvaluator(), FakeProfiler({"k": [{"m": 3.0}]}), ScriptedProposer([])
    r = run(tmp_path, stage, proposer, evaluator, profiler)
    assert evaluator.calls == [START] and profiler.calls == 1
    assert proposer.parents[0] == START and proposer.metrics[0] == {"k": [{"m": 3.0}]}
    assert r.rows() == [("starting kernel", Status.ACCEPTED, None)]
    assert r.out.best.cand_id == r.out.start.cand_id and r.out.evaluations == 1


def test_a_rejected_starting_kernel_stops_the_stage_before_any_proposal(tmp_path, stage):
    evaluator = FakeEvaluator({START: EvalResult(status=Status.INCORRECT, reason="wrong values")})
    proposer = ScriptedProposer([[V1]])
    with pytest.raises(StartingKernelRejected, match="incorrect: wrong values"):
        run(tmp_path, stage, proposer, evaluator)
    assert proposer.parents == []


# --- what becomes the best -----------------------------------------------------------------------------


def test_a_faster_candidate_becomes_the_best_and_the_parent_of_the_next_step(tmp_path, stage):
    evaluator = FakeEvaluator({V1: timed(9.0), V2: timed(8.0)})
    proposer = ScriptedProposer([[V1], [V2]])
    r = run(tmp_path, stage, proposer, evaluator)
    # each step starts from the best so far; after the script, an empty step is asked again (patience 2)
    assert proposer.parents == [START, V1, V2, V2]
    assert r.out.best.source == V2 and r.out.best.median_ms == pytest.approx(8.0)
    assert (tmp_path / "best_kernel.py").read_text() == V2
    assert (tmp_path / f"best_kernel.{stage.name}.py").read_text() == V2


def test_a_gain_below_min_gain_or_within_the_noise_is_no_gain(tmp_path, stage):
    evaluator = FakeEvaluator({V1: timed(9.95), V2: timed(9.0, iqr=2.0)})  # 0.5% faster; 10% but noisy
    r = run(tmp_path, stage, ScriptedProposer([[V1, V2]]), evaluator, min_gain=0.01)
    assert r.out.best.source == START


def test_the_fastest_of_a_step_wins(tmp_path, stage):
    evaluator = FakeEvaluator({V1: timed(9.0), V2: timed(7.0), V3: timed(8.0)})
    r = run(tmp_path, stage, ScriptedProposer([[V1, V2, V3]]), evaluator)
    assert r.out.best.source == V2


# --- failed candidates ----------------------------------------------------------------------------------


def test_a_candidate_breaking_the_stage_rules_is_recorded_without_an_evaluation(tmp_path, stage):
    broken = "def forward(:\n"
    evaluator = FakeEvaluator()
    r = run(tmp_path, stage, ScriptedProposer([[broken]]), evaluator)
    assert evaluator.calls == [START]
    assert r.rows()[1][:2] == ("scripted 1.1", Status.CONSTRAINT)


def test_a_failed_candidate_is_repaired_and_the_fix_evaluated_next(tmp_path, stage):
    evaluator = FakeEvaluator({V1: EvalResult(status=Status.INCORRECT, reason="off by one"), V2: timed(8.0)})
    r = run(tmp_path, stage, ScriptedProposer([[V1, V3]], repairs={V1: V2}), evaluator)
    assert evaluator.calls == [START, V1, V2, V3]  # the fix before the rest of the step
    labels = [(label, parent) for label, _, parent in r.rows()]
    ids = [row[0] for row in r.store.conn.execute("SELECT id FROM candidates ORDER BY id")]
    assert labels[2] == ("scripted repair", ids[1])  # the fix descends from the candidate it fixes
    assert r.out.best.source == V2


def test_what_the_proposer_rejected_itself_is_recorded_and_its_errors_reported(tmp_path, stage):
    class NoCode(ScriptedProposer):
        def rejected(self, ctx: ProposalContext) -> list[tuple[Candidate, EvalResult]]:
            cand = Candidate(source="", proposer=self.name, stage=ctx.stage, label="reply without code")
            return [(cand, EvalResult(status=Status.NO_CODE, reason="no code block"))]

        def errors(self) -> list[str]:
            return ["HTTP 503"]

    r = run(tmp_path, stage, NoCode([[V1]]), FakeEvaluator(), max_iterations=1)
    assert ("reply without code", Status.NO_CODE, None) in r.rows()
    assert "endpoint error: HTTP 503" in r.reporter.infos


# --- when a stage ends ----------------------------------------------------------------------------------


def test_the_iteration_budget_caps_the_stage(tmp_path, stage):
    proposer = ScriptedProposer([[variant(n)] for n in range(10)])
    run(tmp_path, stage, proposer, FakeEvaluator(), max_iterations=2)
    assert len(proposer.parents) == 2


def test_tries_without_gain_end_the_stage(tmp_path, stage):
    proposer = ScriptedProposer([[V1, V2], [V3, V4], [V5]])
    r = run(tmp_path, stage, proposer, FakeEvaluator(), no_gain_tries=4)
    assert len(proposer.parents) == 2
    assert r.out.notes == ["stage ended: 4 tries in a row without a gain above 1%"]


def test_an_empty_step_is_asked_again_up_to_the_patience_unless_the_proposer_is_done(tmp_path, stage):
    asked_again = ScriptedProposer([])
    run(tmp_path, stage, asked_again, FakeEvaluator(), patience=2)
    assert len(asked_again.parents) == 2

    class Done(ScriptedProposer):
        ends_when_empty = True  # as the built-in search: nothing new now means nothing new later

    done = Done([])
    (tmp_path / "done").mkdir()
    run(tmp_path / "done", stage, done, FakeEvaluator(), patience=2)
    assert len(done.parents) == 1


def test_a_spent_budget_ends_the_stage_with_the_best_so_far(tmp_path, stage):
    class Spends(ScriptedProposer):
        def propose(self, ctx: ProposalContext) -> list[Candidate]:
            if self.parents:
                raise BudgetExhausted("requests: 1 of 1 used")
            return super().propose(ctx)

    r = run(tmp_path, stage, Spends([[V1]]), FakeEvaluator({V1: timed(8.0)}))
    assert r.out.stopped_by == "budget" and r.out.best.source == V1
    assert r.out.notes == ["a budget ended the stage: requests: 1 of 1 used"]


def test_reaching_the_roofline_target_ends_the_stage(tmp_path, stage):
    evaluator = FakeEvaluator({V1: timed(5.0, roofline_ms=4.6)})  # 92% of the roofline
    proposer = ScriptedProposer([[V1], [V2]])
    r = run(tmp_path, stage, proposer, evaluator, roofline_target=90.0)
    assert len(proposer.parents) == 1
    assert r.out.notes == ["stage ended: the best kernel is at 92.0% of the roofline"]


def test_a_start_at_the_roofline_target_is_not_searched(tmp_path, stage):
    evaluator = FakeEvaluator({START: timed(5.0, roofline_ms=4.6)})
    proposer = ScriptedProposer([[V1]])
    r = run(tmp_path, stage, proposer, evaluator)
    assert evaluator.calls == [START] and proposer.parents == []
    assert r.out.notes == [
        "stage not searched: the kernel it starts from is at 92.0% of the roofline (target 90%)"
    ]


def test_a_stage_entered_at_the_target_neither_evaluates_nor_profiles_again(tmp_path, stage):
    """From a previous stage's best already within the target: its profile stays with the kernel."""
    evaluator, profiler = FakeEvaluator(), FakeProfiler()
    earlier = ProfileOutcome(metrics={"k": [{"m": 1.0}]})
    start = Best(cand_id=3, source=START, result=timed(7.2, roofline_ms=7.2 * 0.95), profile=earlier)
    r = run(tmp_path, stage, ScriptedProposer([[V1]]), evaluator, profiler, start=start)
    assert evaluator.calls == [] and profiler.calls == 0 and r.out.evaluations == 0
    assert r.out.best.profile is earlier and r.out.notes[0].startswith("stage not searched: ")


def test_a_stage_entered_below_the_target_profiles_the_start_with_its_own_metric_set(tmp_path, stage):
    evaluator, profiler = FakeEvaluator(), FakeProfiler({"k": [{"dram": 50.0}]})
    start = Best(cand_id=3, source=START, result=timed(10.0), profile=ProfileOutcome())
    proposer = ScriptedProposer([])
    run(tmp_path, stage, proposer, evaluator, profiler, start=start)
    assert evaluator.calls == [] and profiler.calls == 1
    assert proposer.metrics[0] == {"k": [{"dram": 50.0}]}


def test_proposers_are_found_by_their_short_name():
    assert proposer_class("scripted") is ScriptedProposer
    assert proposer_class("search").name == "search"
    with pytest.raises(KeyError, match="unknown proposer 'nope'"):
        proposer_class("nope")
