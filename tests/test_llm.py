"""The LLM path end to end over real HTTP: settings, client, cache and proposer against a loopback server.

Every test drives LLMProposer (or load_llm_settings) with a real Store in tmp_path and checks what reached
the server and what was recorded in the replies table. Sleeping is injected, so retries cost no time.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from llm_server import (
    LLMServer,
    closed_port_url,
    error,
    rate_limited,
    raw,
    reply,
    reply_n,
    slow,
)

from agent.evaluation.sandbox import is_secret
from agent.llm.cache import LLMCache
from agent.llm.client import BudgetExhausted, EndpointFailed, retry_after_s
from agent.llm.settings import LLMConfigError, LLMSettings, load_llm_settings
from agent.proposers.base import ProposalContext
from agent.proposers.llm import LLMProposer
from agent.records import EvalResult, ProblemSpec, Status
from agent.store import Store

KEY = "sk-test-SECRET-0123456789"
PROMPT = "You are a Triton kernel optimization specialist.\n[CURRENT CODE]\n...\nOUTPUT RULES (STRICT): ..."
PARENT = "import torch\nclass ModelNew:\n    pass\n"


def kernel(tag: str | int) -> str:
    return (
        f"import torch\nimport triton\nimport triton.language as tl\n\n\n"
        f"@triton.jit\ndef k_{tag}(x_ptr):\n    pass\n\n\n"
        f"class ModelNew(torch.nn.Module):\n    def forward(self, x):\n        return x  # {tag}\n"
    )


def answer(tag: str | int) -> str:
    return f"Here is the faster kernel.\n\n```python\n{kernel(tag)}```\n"


@pytest.fixture
def server():
    s = LLMServer().start()
    yield s
    s.stop()


class Harness:
    def __init__(self, tmp_path: Path, base_url: str, store_name: str = "run", **overrides):
        self.tmp_path = tmp_path
        self.sleeps: list[float] = []
        values = dict(
            base_url=base_url,
            api_key=KEY,
            model="test-model",
            samples=1,
            max_attempts=3,
            timeout_s=5.0,
            cache_path=tmp_path / "cache.sqlite",
        )
        values.update(overrides)
        self.settings = LLMSettings(**values)
        (tmp_path / store_name).mkdir(exist_ok=True)
        self.store = Store.open_dir(tmp_path / store_name)
        self.run_id = self.store.start_run(
            "p", "cpu", None, "llm", self.settings.describe(), self.settings.safe_dict()
        )
        self.proposer = LLMProposer(self.settings, self.store, sleep=self.sleeps.append)
        self.iteration = 0

    def ctx(self, prompt: str = PROMPT, tried: set[str] | None = None) -> ProposalContext:
        self.iteration += 1
        prompt_id = self.store.add_prompt(self.run_id, "micro", self.iteration, prompt)
        return ProposalContext(
            problem=ProblemSpec(name="p", reference_path=Path("ref.py")),
            stage="micro",
            iteration=self.iteration,
            parent_id=1,
            parent_source=PARENT,
            parent_result=EvalResult(status=Status.ACCEPTED),
            prompt_text=prompt,
            prompt_id=prompt_id,
            tried_sources=tried or {PARENT},
        )

    def replies(self) -> list[sqlite3.Row]:
        return self.store.conn.execute("SELECT * FROM replies ORDER BY id").fetchall()

    def close(self) -> None:
        self.proposer.close()
        self.store.close()


@pytest.fixture
def make(tmp_path, server):
    made: list[Harness] = []

    def factory(base_url: str | None = None, **overrides) -> Harness:
        h = Harness(tmp_path, base_url or server.base_url, store_name=f"run{len(made)}", **overrides)
        made.append(h)
        return h

    yield factory
    for h in made:
        h.close()


def all_text(path: Path) -> str:
    conn = sqlite3.connect(path)
    out = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        out += [repr(tuple(row)) for row in conn.execute(f"SELECT * FROM {table}")]
    conn.close()
    return "\n".join(out)


# --- normal replies ---------------------------------------------------------------------------------
def test_n_samples_in_one_request_are_recorded_and_extracted(make, server):
    h = make(samples=3, temperature=0.3, max_tokens=1234)
    server.script(reply_n(answer))
    ctx = h.ctx()
    cands = h.proposer.propose(ctx)
    assert [c.label for c in cands] == ["llm sample 1", "llm sample 2", "llm sample 3"]
    assert [c.source for c in cands] == [kernel(i) for i in range(3)]
    assert all(c.proposer == "llm" and c.stage == "micro" and c.prompt_id == ctx.prompt_id for c in cands)
    assert server.count == 1 and h.proposer.n_supported is True
    body = server.requests[0]
    assert body["n"] == 3 and body["model"] == "test-model" and body["temperature"] == 0.3
    assert body["max_tokens"] == 1234 and body["messages"] == [{"role": "user", "content": PROMPT}]
    assert server.headers[0]["authorization"] == f"Bearer {KEY}"
    rows = h.replies()
    assert [r["id"] for r in rows] == [c.reply_id for c in cands]
    assert all(r["error"] is None and r["prompt_id"] == ctx.prompt_id for r in rows)
    assert all(r["model"] == "test-model" for r in rows)
    assert rows[0]["text"] == answer(0) and rows[0]["latency_s"] > 0
    assert '"completion_tokens": 50' in rows[0]["usage"]  # 150 completion tokens shared by 3 choices
    # The key reaches the server's Authorization header and nothing else.
    assert KEY not in all_text(h.store.path) and KEY not in all_text(h.settings.cache_path)
    assert KEY not in h.settings.describe() and KEY not in repr(h.settings)
    assert KEY not in str(h.settings.safe_dict())


def test_server_that_ignores_n_gets_single_requests(make, server):
    h = make(samples=3, concurrency=2)
    server.script(reply(answer("a")), reply(answer("b")), reply(answer("c")))
    cands = h.proposer.propose(h.ctx())
    assert sorted(c.source for c in cands) == sorted(kernel(t) for t in "abc")
    assert server.count == 3 and server.requests[0]["n"] == 3
    assert all("n" not in r for r in server.requests[1:])
    assert h.proposer.n_supported is False
    server.script(*[reply(answer(t)) for t in "def"])  # from now on: single requests only
    assert len(h.proposer.propose(h.ctx("another prompt"))) == 3
    assert server.count == 6 and all("n" not in r for r in server.requests[3:])
    assert len(h.replies()) == 6 and server.unexpected == 0


def test_replies_without_code_or_with_bad_code_become_failures(make, server):
    h = make(samples=4)
    bad = "```python\nimport torch\nclass ModelNew(torch.nn.Module:\n    pass\n```"
    drafts = (
        f"First a draft:\n```python\n{kernel('draft')}```\n"
        f"and the final one:\n```python\n{kernel('final')}```"
    )
    server.script(reply("I cannot help with that.", bad, drafts, answer("x")))
    ctx = h.ctx(tried={PARENT, kernel("x")})
    cands = h.proposer.propose(ctx)
    assert [c.source for c in cands] == [kernel("final")]  # the last of several blocks is the answer
    failures = {f.label: f for f in h.proposer.last_failures}
    assert failures["llm sample 1"].status == Status.NO_CODE
    assert failures["llm sample 2"].status == Status.COMPILE_ERROR
    assert "ModelNew" in failures["llm sample 2"].source
    assert failures["llm sample 4"].status is None and "already tried" in failures["llm sample 4"].reason
    cand, result = failures["llm sample 2"].candidate(ctx), failures["llm sample 2"].result()
    assert cand.reply_id == failures["llm sample 2"].reply_id and cand.prompt_id == ctx.prompt_id
    assert result.status == Status.COMPILE_ERROR and "does not parse" in result.reason
    assert len(h.replies()) == 4 and all(r["error"] is None for r in h.replies())


def test_reasoning_models_code_is_taken_from_content(make, server):
    h = make(samples=2)
    think = f"<think>Maybe this?\n```python\n{kernel('thought')}```\n</think>\n{answer('real')}"
    server.script(reply(None, think, reasoning="long chain of thought " * 10))
    cands = h.proposer.propose(h.ctx())
    assert [c.source for c in cands] == [kernel("real")]
    (failure,) = h.proposer.last_failures
    assert failure.status == Status.NO_CODE
    assert "no content" in failure.reason and "reasoning" in failure.reason
    rows = h.replies()
    assert rows[0]["text"] is None and "no content" in rows[0]["error"]
    assert '"reasoning_chars": 220' in rows[1]["usage"]


# --- untrusted bodies -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        (raw(b'{"id": "x", "choices": [ oops'), "invalid JSON body"),
        (
            raw(b'{"id": "x", "object": "chat.completion", "choices": [], "usage": null}'),
            "empty choices list",
        ),
        (raw(b'["not", "an", "object"]'), "not an object"),
        (raw(b"<html>bad gateway</html>", content_type="text/html"), "invalid JSON body"),
    ],
)
def test_unusable_bodies_are_retried_and_never_blamed_on_the_model(make, server, behaviour, reason):
    h = make(samples=1)
    server.script(behaviour, reply(answer(1)))
    assert [c.source for c in h.proposer.propose(h.ctx())] == [kernel(1)]
    assert h.proposer.last_failures == [] and h.proposer.last_errors == []
    first, second = h.replies()
    assert reason in first["error"] and "unusable body" in first["error"] and "retrying" in first["error"]
    assert second["error"] is None and len(h.sleeps) == 1 and server.count == 2


def test_huge_reply_is_recorded_truncated_and_not_used(make, server):
    h = make(samples=2, max_reply_chars=10_000)
    server.script(reply("x" * 50_000 + answer("huge"), answer("ok")))
    cands = h.proposer.propose(h.ctx())
    assert [c.source for c in cands] == [kernel("ok")]
    assert "exceeds max_reply_chars=10000" in h.proposer.last_failures[0].reason
    row = h.replies()[0]
    assert len(row["text"]) == 10_000 and "recorded truncated" in row["error"]


# --- retries ------------------------------------------------------------------------------------------
def test_429_retry_after_is_honoured(make, server):
    h = make()
    server.script(rate_limited("1"), reply(answer(1)))
    assert len(h.proposer.propose(h.ctx())) == 1
    assert h.sleeps == [1.0]
    first, second = h.replies()
    assert "HTTP 429" in first["error"] and "Rate limit reached" in first["error"]
    assert "retrying in 1.0 s" in first["error"] and first["text"] is None
    assert second["error"] is None and '"attempts": 2' in second["usage"]


def test_retry_after_forms_and_cap(make, server):
    now = datetime(2030, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert retry_after_s({"retry-after": date}, now) == 7.0
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None
    h = make(retry_after_cap_s=5)
    server.script(rate_limited("3600"), reply(answer(1)))
    h.proposer.propose(h.ctx())
    assert h.sleeps == [5.0]


def test_500_then_success_backs_off_with_jitter(make, server):
    h = make(backoff_base_s=2.0)
    server.script(error(500, "upstream exploded"), error(503, "overloaded"), reply(answer(1)))
    assert len(h.proposer.propose(h.ctx())) == 1
    assert 1.0 <= h.sleeps[0] <= 2.0 and 2.0 <= h.sleeps[1] <= 4.0
    assert [r["error"] is None for r in h.replies()] == [False, False, True]
    assert "HTTP 500" in h.replies()[0]["error"] and "upstream exploded" in h.replies()[0]["error"]


def test_timeout_is_retried(make, server):
    h = make(timeout_s=0.3)
    server.script(slow(2.0), reply(answer(1)))
    assert len(h.proposer.propose(h.ctx())) == 1
    first = h.replies()[0]["error"]
    assert "no reply from http://127.0.0.1" in first and "within 0.3 s" in first
    assert server.count == 2


def test_transient_failures_that_outlive_retries_end_the_step_cleanly(make, server):
    h = make(max_attempts=3)
    server.script(error(500, "down"), error(502, "down"), error(500, "still down"))
    assert h.proposer.propose(h.ctx()) == []
    (message,) = h.proposer.last_errors
    assert "gave up after 3 attempts" in message and "still down" in message
    assert [r["error"].startswith("attempt") for r in h.replies()] == [True, True, False]
    assert len(h.sleeps) == 2 and server.count == 3


def test_connection_refused_after_the_retries_fails_the_run(make):
    h = make(base_url=closed_port_url(), max_attempts=2)
    with pytest.raises(EndpointFailed, match=r"cannot connect to http://127.0.0.1") as e:
        h.proposer.propose(h.ctx())
    assert e.value.part == "endpoint"
    assert len(h.replies()) == 2 and len(h.sleeps) == 1  # both attempts recorded before the run ends


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "check the key: no API key is set"),
        (403, "check the key: no API key is set"),
        (404, "is the model name 'test-model' right?"),
    ],
)
def test_a_refused_key_or_unknown_model_fails_the_run_at_once(make, server, status, hint):
    h = make(samples=2, api_key=None)
    server.script(error(status, "Incorrect API key provided" if status != 404 else "model not found"))
    with pytest.raises(EndpointFailed) as e:
        h.proposer.propose(h.ctx())
    message = str(e.value)
    assert f"HTTP {status} from http://127.0.0.1" in message and hint in message
    assert ("Incorrect API key" if status != 404 else "model not found") in message  # the server's words
    assert e.value.part == ("model" if status == 404 else "key")
    assert server.count == 1 and h.sleeps == [] and KEY not in message
    assert h.replies()[0]["error"] in message


def test_a_final_400_is_not_retried_and_not_fatal(make, server):
    h = make(samples=2)
    server.script(error(400, "prompt too long"))
    assert h.proposer.propose(h.ctx()) == []
    (message,) = h.proposer.last_errors
    assert "HTTP 400" in message and "prompt too long" in message and server.count == 1


# --- budget -------------------------------------------------------------------------------------------
def test_budget_exhausted_mid_step(make, server):
    h = make(samples=3, max_requests=2, concurrency=1)
    server.script(reply(answer("a")), reply(answer("b")))  # ignores n: the third would need a third request
    cands = h.proposer.propose(h.ctx())
    assert [c.source for c in cands] == [kernel("a"), kernel("b")]  # what was paid for is still used
    assert "request budget spent: 2 of 2" in h.replies()[-1]["error"]
    with pytest.raises(BudgetExhausted, match="2 of 2 requests"):
        h.proposer.propose(h.ctx("next prompt"))
    assert server.count == 2 and server.unexpected == 0 and h.proposer.budget.requests == 2


def test_token_budget(make, server):
    h = make(max_tokens_total=150)
    server.script(reply(answer(1)))  # 100 prompt + 50 completion tokens
    assert len(h.proposer.propose(h.ctx())) == 1
    with pytest.raises(BudgetExhausted, match="150 of 150 tokens"):
        h.proposer.propose(h.ctx("next prompt"))
    assert server.count == 1


# --- cache --------------------------------------------------------------------------------------------
def test_rerun_is_served_from_the_cache(make, server):
    prompts = [PROMPT, "second prompt", PROMPT]  # the third repeats the first: fresh samples, not a replay
    server.script(*[reply_n(lambda i, j=j: answer(f"{j}_{i}")) for j in range(3)])
    first = make(samples=2)
    sources = [[c.source for c in first.proposer.propose(first.ctx(p))] for p in prompts]
    assert server.count == 3 and sources[0] != sources[2]
    second = make(samples=2)  # a new run, same cache file
    assert [[c.source for c in second.proposer.propose(second.ctx(p))] for p in prompts] == sources
    assert server.count == 3 and second.proposer.budget.requests == 0  # no request at all
    rows = second.replies()
    assert len(rows) == 6 and all('"cached": true' in r["usage"] and r["error"] is None for r in rows)
    assert len(LLMCache(second.settings.cache_path)) == 6


def test_no_cache_skips_reads_but_writes(make, server):
    server.script(reply(answer("old")), reply(answer("new")))
    first = make()
    first.proposer.propose(first.ctx())
    fresh = make(use_cache=False)
    assert [c.source for c in fresh.proposer.propose(fresh.ctx())] == [kernel("new")]
    cached = make()
    assert [c.source for c in cached.proposer.propose(cached.ctx())] == [kernel("new")]
    assert server.count == 2


def test_errors_are_not_cached(make, server):
    server.script(error(400, "bad"), reply(answer(1)))
    h1 = make()
    assert h1.proposer.propose(h1.ctx()) == []
    h2 = make()
    assert len(h2.proposer.propose(h2.ctx())) == 1 and server.count == 2


# --- repair -------------------------------------------------------------------------------------------
def test_repair_is_bounded_per_candidate(make, server):
    h = make(repair_attempts=2)
    server.script(reply(answer("v1")), reply(answer("v2")), reply(answer("v3")))
    ctx = h.ctx()
    (cand,) = h.proposer.propose(ctx)
    fixed = h.proposer.repair(ctx, cand.source, "triton.compiler.errors.CompilationError: at 7:4: bad ```")
    assert fixed is not None and fixed.source == kernel("v2") and fixed.label == "llm repair 1"
    sent = server.requests[1]["messages"][0]["content"]
    # The stage prompt less its [CURRENT CODE] block: the failed code stands in its place, once.
    assert sent.startswith("You are a Triton kernel optimization specialist.\nOUTPUT RULES (STRICT)")
    assert (
        "[CURRENT CODE]" not in sent and sent.count(kernel("v1")) == 1 and "CompilationError: at 7:4" in sent
    )
    assert "[ERROR]" in sent and "OUTPUT RULES" in sent
    prompt_row = h.store.conn.execute("SELECT * FROM prompts WHERE id=?", (fixed.prompt_id,)).fetchone()
    assert prompt_row["stage"] == "micro:repair" and prompt_row["text"] == sent
    again = h.proposer.repair(ctx, fixed.source, "still wrong")  # the same lineage: attempt 2 of 2
    assert again is not None and again.label == "llm repair 2"
    assert h.proposer.repair(ctx, again.source, "and again") is None
    assert server.count == 3 and server.unexpected == 0


def test_repair_that_returns_the_same_code(make, server):
    h = make()
    server.script(reply(answer("same")))
    assert h.proposer.repair(h.ctx(), kernel("same"), "boom") is None
    (failure,) = h.proposer.last_failures
    assert failure.status is None and "already tried" in failure.reason


# --- settings -----------------------------------------------------------------------------------------
def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "ncu-agent.toml"
    path.write_text(body)
    return path


def test_settings_precedence(tmp_path):
    env = {
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": "http://env-openai/v1",
        "NCU_AGENT_BASE_URL": "http://env/v1",
        "NCU_AGENT_MODEL": "env-model",
        "NCU_AGENT_TEMPERATURE": "0.2",
        "NCU_AGENT_SAMPLES": "2",
        "NCU_AGENT_NO_CACHE": "1",
        "NCU_AGENT_MAX_REQUESTS": "",
    }
    config = write_config(
        tmp_path, '[llm]\nmodel = "file-model"\ntemperature = 0.5\ncache_path = "c.sqlite"\n'
    )
    s = load_llm_settings(config, {"temperature": 0.9, "samples": None, "max_tokens": None}, env=env)
    assert s.base_url == "http://env/v1" and s.model == "file-model"
    assert s.temperature == 0.9 and s.samples == 2
    assert s.use_cache is False and s.max_requests is None and s.cache_path == tmp_path / "c.sqlite"
    assert s.api_key is not None and s.api_key.get_secret_value() == KEY
    assert s.source_of("temperature") == "flag --temperature"
    assert s.source_of("samples") == "env NCU_AGENT_SAMPLES"
    assert s.source_of("model") == f"file {config}" and s.source_of("max_tokens") == "default"
    assert "file-model at http://env/v1 (key set)" in s.describe() and KEY not in s.describe()
    assert load_llm_settings(None, {}, env={}).model is None


@pytest.mark.parametrize(
    ("env", "file", "flags", "expected"),
    [
        (
            {},
            None,
            {"temperature": 3.0},
            "'temperature' = 3.0 (from flag --temperature): Input should be less",
        ),
        ({"NCU_AGENT_SAMPLES": "many"}, None, {}, "'samples' = 'many' (from env NCU_AGENT_SAMPLES)"),
        ({}, "[llm]\nsamples = 17\n", {}, "'samples' = 17 (from file "),
        ({}, "[llm]\ntemprature = 1\n", {}, "unknown LLM setting 'temprature' (from file "),
        ({}, "[llm\n", {}, "is not valid TOML"),
        ({}, '[llm]\napi_key_env = "MY_KEY"\n', {}, "$MY_KEY, which is unset"),
        ({"NCU_AGENT_NO_CACHE": "maybe"}, None, {}, "NCU_AGENT_NO_CACHE='maybe'"),
        (
            {"OPENAI_BASE_URL": "localhost:8000"},
            None,
            {},
            "'base_url' = 'localhost:8000' (from env OPENAI_BASE_URL)",
        ),
        ({}, None, {"max_requests": 0}, "'max_requests' = 0 (from flag --max-requests)"),
    ],
)
def test_settings_errors_name_field_value_and_source(tmp_path, env, file, flags, expected):
    config = write_config(tmp_path, file) if file is not None else None
    with pytest.raises(LLMConfigError) as info:
        load_llm_settings(config, flags, env=env)
    assert expected in str(info.value)


def test_settings_key_from_named_variable_and_never_shown(tmp_path):
    config = write_config(tmp_path, '[llm]\napi_key_env = "DEEPSEEK_API_KEY"\nmodel = "m"\n')
    s = load_llm_settings(config, {}, env={"DEEPSEEK_API_KEY": KEY})
    assert s.api_key.get_secret_value() == KEY and "via $DEEPSEEK_API_KEY" in s.source_of("api_key")
    with pytest.raises(LLMConfigError) as info:
        load_llm_settings(write_config(tmp_path, "[llm]\napi_key = 5\n"), {}, env={})
    assert "'api_key' = <hidden>" in str(info.value)
    with pytest.raises(LLMConfigError, match=r"missing\.toml does not exist"):
        load_llm_settings(tmp_path / "missing.toml", {}, env={})
    with pytest.raises(LLMConfigError, match="no LLM model given"):
        LLMProposer(LLMSettings(), Store.open_dir(tmp_path))
    # Candidate worker processes get the environment without these (agent.evaluation.sandbox.worker_env).
    assert all(is_secret(name) for name in ("OPENAI_API_KEY", "NCU_AGENT_API_KEY", "DEEPSEEK_API_KEY"))
