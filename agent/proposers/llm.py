"""The LLM proposer: the stage prompt goes to an OpenAI-compatible endpoint, kernels come back.

Per step: ask for `samples` replies in one request (the API's `n`); an endpoint that returns fewer
(many local servers ignore `n`) gets the rest as single requests, `concurrency` at a time, and is asked
that way from then on. Replies come from the cache first (llm_cache). Every reply, skipped choice and
failed attempt is written to the store's replies table as it is known; only HTTP happens in threads,
the store is written from the calling thread.

Returned: code-bearing candidates only. The rest is in `last_failures` (a reply without code, or whose
code does not parse: the loop records them as NO_CODE / COMPILE_ERROR; a repeat of code already tried is
not evaluated again, and its reply row says so) and `last_errors` (requests that failed for good: the
endpoint's fault, never shown to the model). Both are reset by each propose() and repair() call.

What no later request can fix (a refused key, an unknown model, nothing listening) and `max_endpoint_errors`
failed requests in a row raise EndpointFailed: the run ends as failed. A reply cut at the token limit
(finish_reason "length") whose code is unusable fails with a reason that says so and asks for the whole
file again, shorter. Test harness after ModelNew (`if __name__`, get_inputs...) is cut before evaluation,
and the reply row lists what was cut (`removed`).

BudgetExhausted propagates, except that candidates already paid for in the same step are returned first:
the next request then raises it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel

from agent.llm.cache import CachedReply, LLMCache, cache_key
from agent.llm.client import FATAL_STATUS, Budget, BudgetExhausted, ChatClient, EndpointFailed, LLMError
from agent.llm.extract import CodeSyntaxError, ExtractError, extract_code, strip_harness
from agent.llm.reply import Attempt, ChatResult, Choice, Usage
from agent.llm.settings import LLMSettings
from agent.proposers.base import ProposalContext, Proposer
from agent.proposers.llm_repair import render_repair, truncated_reason
from agent.records import Candidate, EvalResult, Status
from agent.store import Store


class ReplyFailure(BaseModel):
    """A reply that gave no candidate. `status` None: nothing to record as a candidate (a duplicate)."""

    reply_id: int
    prompt_id: int
    status: Status | None
    reason: str
    source: str = ""  # the code that was tried, when there was some (COMPILE_ERROR)
    label: str = ""

    def candidate(self, ctx: ProposalContext) -> Candidate:
        """The rejected candidate, for the loop to store with `result()`."""
        return Candidate(
            source=self.source,
            proposer=LLMProposer.name,
            stage=ctx.stage,
            parent_id=ctx.parent_id,
            label=self.label,
            prompt_id=self.prompt_id,
            reply_id=self.reply_id,
        )

    def result(self) -> EvalResult:
        return EvalResult(status=self.status or Status.NO_CODE, reason=self.reason)


class _Usable(BaseModel):
    number: int  # 1-based within the step
    prompt_id: int
    reply_id: int
    text: str
    truncated: bool = False  # finish_reason "length": the code may be cut


def _digest(text: str) -> str:
    return hashlib.sha256(text.strip().encode("utf-8", "surrogatepass")).hexdigest()


class LLMProposer(Proposer):
    name = "llm"

    def __init__(
        self,
        settings: LLMSettings,
        store: Store,
        client: ChatClient | None = None,
        cache: LLMCache | None = None,
        sleep: Callable[[float], None] | None = None,
        notify: Callable[[str], None] | None = None,
    ):
        self.settings = settings
        self.store = store
        timing = {"sleep": sleep} if sleep else {}
        self.client = client or ChatClient(settings, notify=notify, **timing)
        self.cache = cache or LLMCache(settings.cache_path, read=settings.use_cache)
        self.n_supported: bool | None = None  # learnt from the first request asking for several
        self.last_failures: list[ReplyFailure] = []
        self.last_errors: list[str] = []
        self._asked: dict[str, int] = defaultdict(int)  # samples asked per prompt: the cache's sample index
        self._repairs: dict[str, int] = defaultdict(int)  # repair requests per original candidate
        self._lineage: dict[str, str] = {}  # repaired source -> the candidate it descends from
        self._errors_in_row = 0  # requests failed for good since the last one that got a reply

    @property
    def budget(self) -> Budget:
        """Requests and tokens spent so far by this run (cache hits are free)."""
        return self.client.budget

    # --- the Proposer interface ------------------------------------------------------------------
    def propose(self, ctx: ProposalContext) -> list[Candidate]:
        self.last_failures, self.last_errors = [], []
        usable, spent = self._sample(ctx.prompt_text, ctx.prompt_id, self.settings.samples)
        seen = {s.strip() for s in ctx.tried_sources}
        out = []
        for u in usable:
            label = f"llm sample {u.number}"
            code = self._extract(u, label, seen)
            if code is not None:
                out.append(
                    Candidate(
                        source=code,
                        proposer=self.name,
                        stage=ctx.stage,
                        parent_id=ctx.parent_id,
                        label=label,
                        prompt_id=ctx.prompt_id,
                        reply_id=u.reply_id,
                    )
                )
        if spent is not None and not out:
            raise spent  # last_failures still lists what the replies paid for gave
        return out

    def repair(self, ctx: ProposalContext, source: str, error_message: str) -> Candidate | None:
        """One request to fix `source`; None when its repairs are used up or nothing usable came back."""
        self.last_failures, self.last_errors = [], []
        root = self._lineage.get(_digest(source), _digest(source))
        if self._repairs[root] >= self.settings.repair_attempts:
            return None
        self._repairs[root] += 1
        number = self._repairs[root]
        text = render_repair(ctx.prompt_text, source, error_message)
        run_id = self._run_id(ctx.prompt_id)
        prompt_id = self.store.add_prompt(run_id, f"{ctx.stage}:repair", ctx.iteration, text)
        usable, spent = self._sample(text, prompt_id, 1)
        if spent is not None and not usable:
            raise spent
        label = f"llm repair {number}"
        for u in usable:
            code = self._extract(u, label, {source.strip(), *(t.strip() for t in ctx.tried_sources)})
            if code is not None:
                self._lineage[_digest(code)] = root
                return Candidate(
                    source=code,
                    proposer=self.name,
                    stage=ctx.stage,
                    parent_id=ctx.parent_id,
                    label=label,
                    prompt_id=prompt_id,
                    reply_id=u.reply_id,
                )
        return None

    def rejected(self, ctx: ProposalContext) -> list[tuple[Candidate, EvalResult]]:
        """Replies without code or with code that does not parse (duplicates need no record)."""
        return [(f.candidate(ctx), f.result()) for f in self.last_failures if f.status is not None]

    def errors(self) -> list[str]:
        return list(self.last_errors)

    def close(self) -> None:
        self.client.close()
        self.cache.close()

    # --- internals ------------------------------------------------------------------------------
    def _run_id(self, prompt_id: int) -> int:
        row = self.store.conn.execute("SELECT run_id FROM prompts WHERE id=?", (prompt_id,)).fetchone()
        if row is None:
            raise KeyError(f"no prompt {prompt_id} in the store")
        return int(row[0])

    def _extract(self, u: _Usable, label: str, seen: set[str]) -> str | None:
        try:
            code = extract_code(u.text)
        except ExtractError as e:
            status = Status.COMPILE_ERROR if isinstance(e, CodeSyntaxError) else Status.NO_CODE
            reason = str(e)
            if u.truncated:
                reason = f"{truncated_reason(self.settings.max_tokens)} ({reason})"
            self.last_failures.append(
                ReplyFailure(
                    reply_id=u.reply_id,
                    prompt_id=u.prompt_id,
                    status=status,
                    reason=reason,
                    source=e.code or "",
                    label=label,
                )
            )
            return None
        code, removed = strip_harness(code)
        if removed:
            self.store.annotate_reply(u.reply_id, removed=removed)
        if code.strip() in seen:
            why = "not evaluated again: the same code as a kernel already tried"
            self.store.annotate_reply(u.reply_id, not_evaluated=why)
            self.last_failures.append(
                ReplyFailure(
                    reply_id=u.reply_id,
                    prompt_id=u.prompt_id,
                    status=None,
                    label=label,
                    source=code,
                    reason=why,
                )
            )
            return None
        seen.add(code.strip())
        return code

    def _key(self, prompt: str, index: int) -> str:
        s = self.settings
        return cache_key(s.base_url, self.client.model, prompt, s.temperature, s.max_tokens, index)

    def _sample(self, prompt: str, prompt_id: int, n: int) -> tuple[list[_Usable], BudgetExhausted | None]:
        """Up to n usable replies, each recorded; and the BudgetExhausted that cut the step short, if any."""
        digest = _digest(prompt)
        base = self._asked[digest]
        self._asked[digest] += n
        usable: list[_Usable] = []
        missing: list[int] = []
        for i in range(n):
            hit = self.cache.get(self._key(prompt, base + i))
            if hit is None:
                missing.append(i)
                continue
            info = {
                **hit.usage.model_dump(),
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cached": True,
                "sample": base + i,
                "cached_tokens": hit.usage.total,
            }
            reply_id = self.store.add_reply(prompt_id, hit.model, hit.text, info, 0.0)
            usable.append(_Usable(number=i + 1, prompt_id=prompt_id, reply_id=reply_id, text=hit.text))
        spent: BudgetExhausted | None = None
        outcomes = self._fetch(prompt, len(missing)) if missing else []
        slots = iter(missing)
        extra = n
        for outcome in outcomes:
            if isinstance(outcome, BudgetExhausted):
                if spent is None or outcome.attempts:  # parallel requests all stop at once: one record
                    self._record_attempts(prompt_id, outcome.attempts, final=str(outcome))
                spent = outcome
            elif isinstance(outcome, LLMError):
                self._record_attempts(prompt_id, outcome.attempts, final=str(outcome))
                self.last_errors.append(str(outcome))
            else:
                self._errors_in_row = 0
                self._record_attempts(prompt_id, outcome.attempts)
                for choice, usage in zip(outcome.choices, self._shares(outcome), strict=True):
                    slot = next(slots, None)
                    if slot is None:  # more choices than asked for: used, but not cached (no sample index)
                        extra += 1
                    index, number = (base + slot, slot + 1) if slot is not None else (None, extra)
                    u = self._record_choice(prompt, prompt_id, index, number, outcome, choice, usage)
                    if u is not None:
                        usable.append(u)
        self._give_up_if_hopeless([o for o in outcomes if isinstance(o, LLMError)])
        usable.sort(key=lambda u: u.number)
        return usable, spent

    def _give_up_if_hopeless(self, errors: list[LLMError]) -> None:
        """EndpointFailed when a failure says no request can succeed, or too many failed in a row."""
        for e in errors:
            if e.fatal:
                raise EndpointFailed(f"LLM endpoint: {e}", FATAL_STATUS.get(e.status or 0, "endpoint"))
        self._errors_in_row += len(errors)
        limit = self.settings.max_endpoint_errors
        if errors and self._errors_in_row >= limit:
            raise EndpointFailed(
                f"LLM endpoint: {self._errors_in_row} requests in a row failed after their retries "
                f"(max_endpoint_errors={limit}); the last: {errors[-1]}"
            )

    @staticmethod
    def _shares(result: ChatResult) -> list[Usage]:
        k = len(result.choices)
        return [result.usage.share(k, i) for i in range(k)]

    def _record_attempts(self, prompt_id: int, attempts: list[Attempt], final: str | None = None) -> None:
        failed = [a for a in attempts if a.error is not None]
        for a in failed:
            last = a is failed[-1] and final is not None
            then = f"; retrying in {a.wait_s:.1f} s" if a.wait_s is not None else ""
            error = final if last else f"attempt {a.number} failed: {a.error}{then}"
            self.store.add_reply(
                prompt_id,
                self.client.model,
                None,
                {"attempt": a.number, "status": a.status},
                a.latency_s,
                error=error,
            )
        if final is not None and not failed:  # stopped before any request (the budget)
            self.store.add_reply(prompt_id, self.client.model, None, None, None, error=final)

    def _record_choice(
        self,
        prompt: str,
        prompt_id: int,
        index: int | None,
        number: int,
        result: ChatResult,
        choice: Choice,
        usage: Usage,
    ) -> _Usable | None:
        info: dict[str, Any] = {
            **usage.model_dump(),
            "cached": False,
            "sample": index,
            "choices_in_request": len(result.choices),
            "attempts": len(result.attempts),
            "finish_reason": choice.finish_reason,
        }
        if choice.reasoning_chars:
            info["reasoning_chars"] = choice.reasoning_chars
        if choice.text is None:
            reply_id = self.store.add_reply(
                prompt_id, result.model, choice.raw, info, result.latency_s, error=choice.skipped
            )
            self.last_failures.append(
                ReplyFailure(
                    reply_id=reply_id,
                    prompt_id=prompt_id,
                    status=Status.NO_CODE,
                    reason=(
                        f"{truncated_reason(self.settings.max_tokens)} ({choice.skipped})"
                        if choice.truncated
                        else choice.skipped or "skipped"
                    ),
                    label=f"llm sample {number}",
                )
            )
            return None
        reply_id = self.store.add_reply(prompt_id, result.model, choice.text, info, result.latency_s)
        if index is not None and not choice.truncated:  # a cut reply is asked again on a rerun
            reply = CachedReply(text=choice.text, usage=usage, model=result.model)
            self.cache.put(self._key(prompt, index), reply)
        return _Usable(
            number=number,
            prompt_id=prompt_id,
            reply_id=reply_id,
            text=choice.text,
            truncated=choice.truncated,
        )

    def _fetch(self, prompt: str, n: int) -> list[ChatResult | LLMError | BudgetExhausted]:
        """n replies: one request asking for n, then single requests for what it did not give."""
        outcomes: list[ChatResult | LLMError | BudgetExhausted] = []
        remaining = n
        if n > 1 and self.n_supported is not False:
            first = self._call(prompt, n)
            outcomes.append(first)
            if isinstance(first, ChatResult):
                self.n_supported = len(first.choices) >= n
                remaining = max(0, n - len(first.choices))
            else:
                remaining = 0  # the request failed as a whole: asking n more times would fail n more times
        if remaining:
            if remaining == 1 or self.settings.concurrency == 1:
                for _ in range(remaining):
                    outcomes.append(self._call(prompt, 1))
                    if isinstance(outcomes[-1], BudgetExhausted):
                        break
            else:
                with ThreadPoolExecutor(max_workers=min(self.settings.concurrency, remaining)) as pool:
                    outcomes += list(pool.map(lambda _: self._call(prompt, 1), range(remaining)))
        return outcomes

    def _call(self, prompt: str, n: int) -> ChatResult | LLMError | BudgetExhausted:
        try:
            return self.client.complete(prompt, n)
        except (LLMError, BudgetExhausted) as e:
            return e
