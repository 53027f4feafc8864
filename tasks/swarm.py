"""The swarm's units of work: load the suite; per shard, fire the prompts, grade the answers.

Nothing here is cached by inputs: a shard's progress lives in the object store
(spotline/swarm/progress.py), and both shard tasks start by reading it, so a retried task, a
resumed flow run or a second shard attempt skips what was sent and graded.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from runtime.retry import retry_policy
from spotline.resources import get_resources
from spotline.settings import TargetSpec
from spotline.storage.base import ObjectNotFound
from spotline.swarm import judge as jd
from spotline.swarm.grading import CheckConfig, target_secrets
from spotline.swarm.progress import ShardProgress
from spotline.swarm.shard import fire_shard, grade_shard
from spotline.swarm.suite import Suite, SuiteUnavailable, from_rows, read_jsonl

RETRY = retry_policy()


@task(name="load-suite", cache_policy=NO_CACHE, persist_result=False)
def load_suite(version: str) -> Suite:
    """The persona dataset's prompts table (``latest`` or a version); the committed fallback suite
    while no version was ever published."""
    res = get_resources()
    cfg = res.settings.swarm
    datasets = res.datasets
    if version == "latest" and datasets.latest(cfg.dataset) is None:
        return from_rows(f"fallback {cfg.fallback_suite.name}", read_jsonl(cfg.fallback_suite))
    try:
        manifest = datasets.manifest(cfg.dataset, None if version == "latest" else version)
        frame = datasets.read(cfg.dataset, manifest.version, table="prompts")
    except ObjectNotFound:
        raise SuiteUnavailable(f"dataset {cfg.dataset!r} has no version {version!r} "
                               f"(have: {', '.join(datasets.versions(cfg.dataset)) or 'none'})") from None
    return from_rows(f"{cfg.dataset}@{manifest.version}", frame.to_dict("records"))


def _check_config(latency_slo_s: float) -> CheckConfig:
    res = get_resources()
    cfg = res.settings.swarm
    secrets = target_secrets(cfg, lambda ref: res.secrets.get(ref).get_secret_value())
    return CheckConfig(secrets, latency_slo_s, cfg.grounded_cosine, cfg.grounded_share)


@task(name="fire-prompts", task_run_name="fire-{shard_key}", cache_policy=NO_CACHE, persist_result=False, **RETRY)
def fire_prompts(shard_key: str, progress: ShardProgress, target: TargetSpec, concurrency: int,
                 timeout_s: float, max_attempts: int, max_duration_s: float) -> dict[str, Any]:
    res = get_resources()
    headers = {name: res.secrets.get(ref).get_secret_value() for name, ref in target.secret_headers.items()}
    return fire_shard(progress, target, concurrency=concurrency, timeout_s=timeout_s, max_attempts=max_attempts,
                      max_duration_s=max_duration_s, headers=headers)


@task(name="grade-answers", task_run_name="grade-{shard_key}", cache_policy=NO_CACHE, persist_result=False, **RETRY)
def grade_answers(shard_key: str, progress: ShardProgress, latency_slo_s: float, judge_use: str,
                  judge_gating: bool) -> dict[str, int]:
    res = get_resources()
    embed = (lambda texts: res.embedder.embed(texts).vectors)
    judge = None
    if judge_use != "none":
        def judge(item, ex):
            return jd.ask(res.gateway, judge_use, item, ex)
    workers = max(1, res.settings.llm.concurrency.get(res.gateway.chain(judge_use)[0][1].provider, 1)) \
        if judge_use != "none" else 1
    return grade_shard(progress, _check_config(latency_slo_s), embed, judge, judge_gating, workers=workers)
