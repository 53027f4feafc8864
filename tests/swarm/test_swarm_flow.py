"""The swarm flow against the real staging app (each build its own server process on loopback),
the real local model, a real Prefect server and the committed fallback suite.

The good build passes on its own merits; each faulty build fails and the report names its
category; the CI command's exit codes; a shard killed mid-run resumes without re-judging.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from deployments.devserver import free_port
from tests.conftest import ROOT, use_settings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api"), pytest.mark.timeout(1200)]
SMOKE = 20  # two prompts of every category from the committed suite


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home with the help centre ingested; the judge route off unless a test turns it on."""
    from flows.ingest import ingest

    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("swarm")
    res = use_settings(mp, tmp, SPOTLINE_SWARM__JUDGE_USE="none", SPOTLINE_SWARM__CONCURRENCY="4")
    for path in sorted((ROOT / "data" / "sample_corpus").rglob("*.md")):
        res.store.put(f"corpus/{path.relative_to(ROOT / 'data' / 'sample_corpus')}", path.read_bytes())
    ingest()
    yield tmp, mp
    mp.undo()
    from spotline import resources
    from spotline.settings import get_settings

    get_settings.cache_clear()
    resources._resources.clear()


class App:
    """`python -m spotline.staging` with one build, in its own process, on a free port."""

    def __init__(self, tmp, build: str, **env: str):
        self.port = free_port()
        self.env = {**os.environ, "SPOTLINE_STORE__ROOT": str(tmp / "store"), "SPOTLINE_INDEX__PATH": str(tmp / "index"),
                    "SPOTLINE_STAGING__BUILD": build, "SPOTLINE_STAGING__PORT": str(self.port), **env}
        self.log = open(tmp / f"staging-{build}.log", "wb")

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "spotline.staging"], env=self.env, cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, "the staging app exited"
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return self
            except OSError:
                assert time.monotonic() < deadline, "the staging app did not start"
                time.sleep(0.3)

    def __exit__(self, *exc):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat"


def _run(url: str, **params):
    from flows.swarm import swarm

    state = swarm(target_url=url, tier="smoke", smoke_size=SMOKE, return_state=True, **params)
    return state, state.result(raise_on_failure=False)


def _failures(home_tmp, result_or_exc) -> list[dict]:
    runs = sorted((home_tmp / "store" / "_spotline" / "swarm" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return [json.loads(line) for line in (runs[-1] / "failures.jsonl").read_text().splitlines() if line]


def test_the_good_build_passes_on_its_own_merits(home):
    tmp, _ = home
    with App(tmp, "good") as app:
        state, result = _run(app.url)
    assert state.is_completed(), state.message
    assert result["gate"] == "pass" and result["prompts"] == SMOKE
    assert result["by_outcome"]["fail"] == 0 and result["by_outcome"]["unanswered"] == 0


@pytest.mark.parametrize("build,category,env,params", [
    ("leaky", "leak", {}, {}),
    ("inventive", "ungrounded", {}, {}),
    ("broken-json", "json", {}, {}),
    # Slow and overloaded: 3 s answers, 429 past 2 in flight, 5% 503. Throttling slows the swarm;
    # only the slowness is a product failure.
    ("slow", "latency", {"SPOTLINE_STAGING__SLOW_DELAY_S": "3", "SPOTLINE_STAGING__SLOW_ERROR_RATE": "0.05"},
     {"latency_slo_s": 2.5}),
])
def test_each_faulty_build_fails_and_the_report_names_its_category(home, build, category, env, params):
    from flows.swarm import ReleaseGateFailed

    tmp, _ = home
    with App(tmp, build, **env) as app:
        state, outcome = _run(app.url, **params)
    assert state.is_failed() and isinstance(outcome, ReleaseGateFailed), state.message
    assert category in str(outcome).split("top failures:")[1].split(",")[0], str(outcome)
    failures = _failures(tmp, outcome)
    assert failures and all(f["false_positive"] is None for f in failures)
    assert any(category in f["failures"] for f in failures)
    if build == "slow":
        assert not any(f["outcome"] == "fail" and f["failures"] in (["http_error"], ["timeout"]) for f in failures), \
            "throttling and 503s are load results, never failed answers"


def _cli(tmp, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPOTLINE_STORE__ROOT": str(tmp / "store"), "SPOTLINE_INDEX__PATH": str(tmp / "index"),
           "SPOTLINE_SWARM__JUDGE_USE": "none", "SPOTLINE_SWARM__SMOKE_SIZE": "10", "SPOTLINE_SWARM__MAX_ATTEMPTS": "2"}
    return subprocess.run([sys.executable, "-m", "cli.main", "swarm", "run", "--tier", "smoke", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_the_ci_command_exits_0_on_pass_1_on_fail_2_when_inconclusive(home):
    tmp, _ = home
    with App(tmp, "good") as good:
        passed = _cli(tmp, "--url", good.url)
    with App(tmp, "leaky") as leaky:
        failed = _cli(tmp, "--url", leaky.url)
    nobody = _cli(tmp, "--url", f"http://127.0.0.1:{free_port()}/v1/chat")  # nothing listens: no answer at all
    assert passed.returncode == 0, passed.stderr[-2000:]
    assert failed.returncode == 1 and "GATE FAILED" in failed.stderr
    assert nobody.returncode == 2 and "GATE INCONCLUSIVE" in nobody.stderr


def test_a_shard_killed_mid_grading_resumes_without_rejudging(home):
    """A shard process is SIGKILLed while its judge works; the shard run again judges only the
    answers without a persisted grade (the judge is the real local model on the judge route)."""
    from spotline.resources import get_resources
    from spotline.swarm.progress import ShardProgress
    from spotline.swarm.suite import choose, from_rows, read_jsonl

    tmp, mp = home
    res = get_resources()
    run_prefix = res.settings.layout.swarm_run("killed-shard")
    progress = ShardProgress(res.store, run_prefix, 0)
    items = choose(from_rows("t", read_jsonl(ROOT / "data" / "swarm_suite" / "prompts.jsonl")).items, "smoke", 12, 3)
    progress.write_items(items)
    script = (
        "import sys; from flows.swarm import swarm_shard; from spotline.settings import get_settings\n"
        "cfg = get_settings().swarm\n"
        "swarm_shard(run_key='killed-shard', shard=0, target=dict(cfg.target.model_dump(), url=sys.argv[1]),"
        " concurrency=4, timeout_s=60, max_attempts=3, max_duration_s=300, latency_slo_s=60, judge_use='judge',"
        " judge_gating=True)\n")
    with App(tmp, "good") as app:
        env = {**app.env, "SPOTLINE_LLM__CACHE_ENABLED": "false"}
        proc = subprocess.Popen([sys.executable, "-c", script, app.url], env=env, cwd=ROOT, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while len(progress.grades()) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "the shard ended before it was killed"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        before = progress.grades()
        assert 3 <= len(before) < len(items), "killed mid-grading"
        mp.setenv("SPOTLINE_LLM__CACHE_ENABLED", "false")
        from spotline import resources
        from spotline.settings import get_settings

        get_settings.cache_clear()
        resources._resources.clear()
        from flows.swarm import swarm_shard

        res = get_resources()
        swarm_shard(run_key="killed-shard", shard=0, target=dict(res.settings.swarm.target.model_dump(), url=app.url),
                    concurrency=4, timeout_s=60, max_attempts=3, max_duration_s=300, latency_slo_s=60,
                    judge_use="judge", judge_gating=True)
    after = progress.grades()
    judged_now = [r for r in res.gateway.ledger.rows() if r.use == "judge"]
    judged_before = sum(1 for g in before.values() if g.judge is not None)
    judged_total = sum(1 for g in after.values() if g.judge is not None)
    assert set(after) == {i.id for i in items}
    assert {k: v.as_dict() for k, v in before.items()} == {k: after[k].as_dict() for k in before}, \
        "finished grades were kept as they were"
    assert len(judged_now) == judged_total - judged_before, "only answers without a grade were judged again"
    mp.setenv("SPOTLINE_LLM__CACHE_ENABLED", "true")


@pytest.mark.parametrize("bad", ["", "None", "ftp://staging.example/chat"])
def test_an_event_without_a_usable_target_is_refused_not_fired_at_the_default(home, bad):
    from flows.swarm import swarm

    state = swarm(target_url=bad, branch="feature/x", return_state=True)
    assert state.is_failed() and "is not an http(s) URL" in (state.message or "")


@pytest.mark.parametrize("how", ["target_url", "target"])
def test_a_target_host_outside_the_allow_list_is_refused_before_any_request(home, how):
    from flows.swarm import swarm
    from spotline.resources import get_resources

    url = "https://collector.example.net/v1/chat"  # would receive the staging key in its headers
    target = dict(get_resources().settings.swarm.target.model_dump(), url=url)
    state = swarm(**({"target_url": url} if how == "target_url" else {"target": target}), return_state=True)
    assert state.is_failed()
    assert "'collector.example.net' is not in swarm.allowed_hosts" in (state.message or "")
