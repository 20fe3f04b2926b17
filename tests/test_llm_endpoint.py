"""The LLM path tells the truth about its endpoint, over real HTTP on loopback.

What no retry fixes ends the run (a refused key, an unknown model, nothing listening, endpoint errors in a
row) with the endpoint's own words; what a retry may fix is retried, recorded, shown on the console and never
blamed on the model; truncated, refused, repeated and harness-carrying replies are each recorded as such.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from fakes import Quiet
from llm_server import LLMServer, closed_port_url, error, raw, reply, slow
from test_llm import KEY, Harness, answer, kernel

from agent.config import LoopPolicy
from agent.llm.client import EndpointFailed
from agent.llm.preflight import preflight
from agent.llm.settings import LLMConfigError, LLMSettings, load_llm_settings
from agent.loop import Best, LoopHooks, LoopSettings, run_stage
from agent.profiling.step import ProfileOutcome
from agent.prompt.gpus import find_gpu
from agent.prompt.stages import load_stage
from agent.records import Candidate, EvalResult, ProblemSpec, Status


@pytest.fixture
def server():
    s = LLMServer().start()
    yield s
    s.stop()


@pytest.fixture
def make(tmp_path, server):
    made: list[Harness] = []

    def factory(base_url: str | None = None, **overrides) -> Harness:
        made.append(Harness(tmp_path, base_url or server.base_url, store_name=f"run{len(made)}", **overrides))
        return made[-1]

    yield factory
    for h in made:
        h.close()


def settings(base_url: str, **values) -> LLMSettings:
    return LLMSettings(
        base_url=base_url, api_key=KEY, max_attempts=2, timeout_s=2.0, backoff_base_s=0.0, **values
    )


def usage(row) -> dict:
    return json.loads(row["usage"] or "{}")


# --- the preflight --------------------------------------------------------------------------------------
def test_preflight_names_a_refused_key_with_the_servers_words(server):
    server.models_error = error(401, "Incorrect API key provided: sk-...")
    with pytest.raises(EndpointFailed, match=r"the API key was refused.*Incorrect API key provided") as e:
        preflight(settings(server.base_url, model="test-model"))
    assert e.value.part == "key" and KEY not in str(e.value) and server.model_requests == 1


def test_preflight_names_a_model_the_server_does_not_serve(server):
    server.models = ["qwen-coder", "llama"]
    with pytest.raises(EndpointFailed, match=r"'gpt-x' is not among the 2 it lists.*qwen-coder") as e:
        preflight(settings(server.base_url, model="gpt-x"))
    assert e.value.part == "model" and server.count == 0  # no completion was asked


def test_preflight_uses_the_one_served_model_and_says_so(server):
    server.models = ["only-model"]
    found = preflight(settings(server.base_url))
    assert found.model == "only-model" and "the only one" in found.note
    server.models = ["a", "b"]
    with pytest.raises(LLMConfigError, match=r"no LLM model given.*serves 2 models: a, b.*--model"):
        preflight(settings(server.base_url))


def test_preflight_dead_port_fails_after_its_retries():
    with pytest.raises(EndpointFailed, match=r"the endpoint fails.*gave up after 2 attempts.*cannot connect"):
        preflight(settings(closed_port_url(), model="m"))


def test_preflight_without_a_models_list_sends_one_token(server):
    server.models = None  # /models answers 404, as on servers that do not list models
    server.script(reply("OK"))
    assert preflight(settings(server.base_url, model="test-model")).model == "test-model"
    assert server.requests[0]["max_tokens"] == 1
    server.script(error(404, "The model `nope` does not exist"))
    with pytest.raises(EndpointFailed, match=r"the model is not served.*does not exist") as e:
        preflight(settings(server.base_url, model="nope"))
    assert e.value.part == "model"


def test_no_key_is_refused_unless_the_server_needs_none(server, tmp_path):
    bare = load_llm_settings(None, {"model": "m"}, env={})
    with pytest.raises(LLMConfigError, match=r"no LLM API key and no endpoint.*OPENAI_API_KEY.*--no-api-key"):
        preflight(bare)
    keyless = load_llm_settings(None, {"base_url": server.base_url, "no_api_key": True}, env={})
    assert preflight(keyless).model == "test-model"
    env = {"OPENAI_API_KEY": KEY, "NCU_AGENT_NO_API_KEY": "1"}
    assert not load_llm_settings(None, {}, env=env).safe_dict()["api_key_set"]  # never sent


# --- transport failures -------------------------------------------------------------------------------
def test_500s_in_a_row_end_the_run_after_max_endpoint_errors(make, server):
    h = make(max_attempts=2, max_endpoint_errors=2)
    server.script(*[error(500, "upstream down")] * 4)
    assert h.proposer.propose(h.ctx()) == [] and h.proposer.last_failures == []  # not the model's fault
    with pytest.raises(EndpointFailed, match=r"2 requests in a row failed.*max_endpoint_errors=2.*upstream"):
        h.proposer.propose(h.ctx())
    assert len(h.replies()) == 4 and all("HTTP 500" in r["error"] for r in h.replies())


def test_a_reply_between_errors_resets_the_count(make, server):
    h = make(max_attempts=1, max_endpoint_errors=2)
    server.script(error(502, "x"), reply(answer(1)), error(502, "x"))
    for _ in range(3):
        h.proposer.propose(h.ctx())  # never two failures in a row: no EndpointFailed


def test_a_hanging_server_is_retried_and_recorded(make, server):
    h = make(timeout_s=0.3, max_attempts=2)
    server.script(slow(1.5), slow(1.5))
    assert h.proposer.propose(h.ctx()) == []
    assert "within 0.3 s" in h.proposer.last_errors[0] and h.proposer.last_failures == []


def test_retries_are_announced(tmp_path, server):
    heard: list[str] = []
    h = Harness(tmp_path, server.base_url, max_attempts=3, backoff_base_s=0.0)
    h.proposer.client.notify = heard.append
    server.script(error(503, "busy"), raw(b"{not json"), reply(answer(1)))
    assert len(h.proposer.propose(h.ctx())) == 1
    assert [m.split(" failed")[0] for m in heard] == ["LLM attempt 1 of 3", "LLM attempt 2 of 3"]
    assert "HTTP 503" in heard[0] and "retrying in 0.0 s" in heard[0] and "invalid JSON body" in heard[1]
    h.close()


def _stage_run(tmp_path: Path, proposer, server_store):
    stage = load_stage("micro")
    settings = LoopSettings(
        stage=stage,
        gpu=find_gpu("h200"),
        device="cpu",
        run_dir=tmp_path,
        metric_set=stage.metric_set,
        policy=LoopPolicy(profile=False, max_iterations=3),
        hooks=LoopHooks(
            evaluator=lambda problem, source, device, **kw: EvalResult(
                status=Status.INCORRECT, reason="wrong"
            )
        ),
    )
    start = Best(1, kernel("start"), EvalResult(status=Status.ACCEPTED), ProfileOutcome())
    server_store.store.add_candidate(
        server_store.run_id, 0, Candidate(source=start.source, proposer="start", stage="micro")
    )
    return run_stage(
        ProblemSpec(name="p", reference_path=Path("ref.py")),
        "",
        proposer,
        server_store.store,
        server_store.run_id,
        settings,
        Quiet(),
        start=start,
    )


def test_endpoint_errors_use_no_iteration_and_an_empty_stage_says_why(make, server, tmp_path):
    h = make(max_attempts=1, max_endpoint_errors=3, repair_attempts=0)
    # Two failed requests (not counted), then three steps of replies without code: the stage's 3 iterations.
    server.script(error(500, "a"), error(500, "b"), *[reply("I would keep it.")] * 3)
    outcome = _stage_run(tmp_path, h.proposer, h)
    prompts = h.store.conn.execute("SELECT iteration FROM prompts WHERE stage='micro' ORDER BY id").fetchall()
    assert [p[0] for p in prompts][:4] == [1, 1, 1, 2]  # asked again under the same iteration
    assert server.count == 4  # patience (2 empty steps) ended the stage at iteration 2
    (note,) = [n for n in outcome.notes if "no new candidate" in n]
    assert "stage ended at iteration 2 of 3" in note and "no Python code block" in note


# --- replies ------------------------------------------------------------------------------------------
def test_a_truncated_reply_is_named_and_the_repair_prompt_says_so(make, server):
    h = make(max_tokens=64)
    cut = answer("cut")[:-60]  # the code ends mid-function, the fence never closes
    server.script(reply(cut, finish_reason="length"), reply(answer("whole")))
    assert h.proposer.propose(h.ctx()) == []
    (failure,) = h.proposer.last_failures
    assert "cut at the token limit (finish_reason=length, max_tokens=64)" in failure.reason
    assert "complete file again, shorter" in failure.reason
    assert json.loads(h.replies()[0]["usage"])["finish_reason"] == "length"
    fixed = h.proposer.repair(h.ctx(), failure.source or PARENT_CODE, failure.reason)
    assert fixed is not None and fixed.source == kernel("whole")
    assert "cut at the token limit" in server.requests[-1]["messages"][0]["content"]
    assert h.proposer.cache.get(h.proposer._key(h.ctx().prompt_text, 0)) is None  # a cut reply is not cached


PARENT_CODE = "import torch\nclass ModelNew:\n    pass\n"


def test_a_refusal_is_recorded_with_its_text(make, server):
    h = make()
    refusal = {"role": "assistant", "content": None, "refusal": "I cannot help with GPU kernels."}
    body = {"model": "test-model", "choices": [{"index": 0, "message": refusal, "finish_reason": "stop"}]}
    server.script(raw(json.dumps(body).encode()))
    assert h.proposer.propose(h.ctx()) == []
    (row,) = h.replies()
    assert row["text"] == "I cannot help with GPU kernels." and "the model refused" in row["error"]
    assert "the model refused" in h.proposer.last_failures[0].reason


def test_test_harness_after_modelnew_is_cut_and_the_cut_recorded(make, server):
    h = make()
    harness = (
        "\n\ndef get_inputs():\n    return [torch.randn(8)]\n\n\n"
        'if __name__ == "__main__":\n    print(ModelNew()(*get_inputs()))\n'
    )
    server.script(reply(f"```python\n{kernel('h')}{harness}```"))
    (cand,) = h.proposer.propose(h.ctx())
    assert cand.source == kernel("h")  # byte for byte what remains
    assert usage(h.replies()[0])["removed"] == ["`get_inputs`", "the `if __name__` block"]


def test_an_honest_kernel_keeps_its_module_constants(make, server):
    h = make()
    code = kernel("c").replace("import torch\n", "import torch\nBLOCK = 128\n")
    server.script(reply(f"```python\n{code}BLOCK_M = 64\n```"))
    (cand,) = h.proposer.propose(h.ctx())
    assert "BLOCK_M = 64" in cand.source and "removed" not in usage(h.replies()[0])


def test_a_repair_repeating_the_failed_code_is_recorded_as_not_evaluated(make, server):
    h = make()
    server.script(reply(answer("same")))
    assert h.proposer.repair(h.ctx(), kernel("same"), "boom") is None
    (row,) = h.replies()
    assert row["text"] == answer("same")
    assert "not evaluated again: the same code" in usage(row)["not_evaluated"]


# --- `ncu-agent run` --------------------------------------------------------------------------------------
def _run(monkeypatch, tmp_path: Path, *args: str, key: str | None = KEY):
    from typer.testing import CliRunner

    from agent.cli import app

    for name in list(os.environ):
        if name.startswith(("OPENAI_", "NCU_AGENT_")):
            monkeypatch.delenv(name)
    if key:
        monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("NCU_AGENT_LLM_CACHE", str(tmp_path / "cache.sqlite"))
    monkeypatch.setenv("NCU_AGENT_MAX_ATTEMPTS", "1")
    run_dir = tmp_path / "run"
    argv = [
        "run",
        "kernels/l1_norm",
        "--llm",
        "--stages",
        "micro",
        "--samples",
        "1",
        "--run-dir",
        str(run_dir),
    ]
    return CliRunner().invoke(app, [*argv, "--max-iterations", "2", *args]), run_dir


def test_run_refuses_no_key_and_no_endpoint_and_says_how_to_set_them(monkeypatch, tmp_path):
    result, run_dir = _run(monkeypatch, tmp_path, "--model", "m", key=None)
    assert result.exit_code == 2 and "OPENAI_API_KEY" in result.output and "--no-api-key" in result.output
    assert not run_dir.exists()


def test_run_with_a_refused_key_fails_before_any_stage(monkeypatch, tmp_path, server):
    server.models_error = error(401, "Incorrect API key provided")
    result, _ = _run(monkeypatch, tmp_path, "--base-url", server.base_url)
    assert result.exit_code == 1 and "the API key was refused" in result.output
    assert "Incorrect API key provided" in result.output and "best kernel" not in result.output
    assert KEY not in result.output and server.count == 0


@pytest.mark.slow
def test_a_key_refused_mid_run_ends_it_failed(monkeypatch, tmp_path, server):
    """The preflight passed (and picked the only model); then the key is refused: failed, exit 1."""
    server.script(error(401, "key revoked"))
    result, run_dir = _run(monkeypatch, tmp_path, "--base-url", server.base_url)
    assert "model 'test-model': the only one" in result.output
    assert result.exit_code == 1 and "key revoked" in result.output and "best kernel" not in result.output
    db = sqlite3.connect(run_dir / "records.sqlite")
    status, note = db.execute("SELECT status, note FROM runs").fetchone()
    assert status == "failed" and "HTTP 401" in note and "key revoked" in note
