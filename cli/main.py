"""`spotline` command line: ingest, query, upload, demo."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Spotline: batch backbone of an LLM product.")


@app.command()
def setup() -> None:
    """Prepare the configured backends: bucket (S3), Prefect result-storage block (S3), vector index."""
    from spotline.resources import get_resources

    res = get_resources()
    if hasattr(res.store, "ensure_bucket"):
        res.store.ensure_bucket()
        from runtime.results import save_result_storage_block

        typer.echo(f"saved result storage block {save_result_storage_block(res.settings)}")
    spec = res.embedder_spec
    res.index.ensure(spec.model_id, spec.dimension)
    typer.echo(f"index {res.index.name!r} ready for {spec.model_id} (dim {spec.dimension})")


@app.command("export-model")
def export_model() -> None:
    """Export the local embedding model to ONNX now (once per weights; e.g. when building an image)."""
    from spotline.embedding.local import model_path
    from spotline.embedding.onnx import ensure_onnx
    from spotline.settings import get_settings

    e = get_settings().embedding
    typer.echo(f"ONNX model ready: {ensure_onnx(model_path(e), e.onnx_cache_dir)}")


@app.command()
def upload(source_dir: Path, prefix: str = typer.Argument("corpus/")) -> None:
    """Copy a local folder into the object store under PREFIX (local folder or S3).

    Symlinks are followed only while they stay inside SOURCE_DIR; anything else is skipped and said.
    """
    from spotline.resources import get_resources
    from spotline.storage.upload import upload_folder

    from spotline.ingestion.requests import BadIngestRequest, check_upload_prefix

    res = get_resources()
    store = res.store
    if not source_dir.is_dir():
        raise typer.BadParameter(f"{source_dir} is not a folder")
    try:
        check_upload_prefix(prefix, res.settings.store.system_prefix)
    except BadIngestRequest as exc:
        raise typer.BadParameter(str(exc)) from None
    if hasattr(store, "ensure_bucket"):
        store.ensure_bucket()
    report = upload_folder(store, source_dir, prefix)
    for path, reason in report.skipped:
        typer.echo(f"skipped {path}: {reason}", err=True)
    typer.echo(f"uploaded {len(report.uploaded)} files to {store.uri(prefix)}, {len(report.unchanged)} unchanged "
               "(already there, byte for byte)" + (f", {len(report.skipped)} skipped" if report.skipped else ""))


def _one_line(exc: BaseException | object) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def require_prefect() -> None:
    """Point this process at a Prefect server that answers, before any work is done.

    PREFECT_API_URL set (yours, or the demo's): that server. Unset: the project's own local server
    (deployments/devserver.py on 127.0.0.1:$PREFECT_PORT, default 4200, state under SPOTLINE_HOME),
    started now if it is not running, with a start-up wait of up to 5 minutes as a busy machine
    needs. Never Prefect's temporary in-process server: its start budget ran out on a loaded
    2-core machine and the ingest died having done nothing. When no server answers, one line
    says what to run, and nothing was done.
    """
    if not os.environ.get("PREFECT_API_URL"):
        if "prefect" in sys.modules:  # Prefect reads its settings once, at import: too late to redirect it
            raise RuntimeError("require_prefect() must run before prefect is imported")
        from deployments import devserver
        from spotline.settings import get_settings

        home = get_settings().home
        port = int(os.environ.get("PREFECT_PORT", "4200"))
        api = f"http://127.0.0.1:{port}/api"
        if not devserver.healthy(api):
            typer.echo(f"starting the local Prefect server on http://127.0.0.1:{port} "
                       "(it keeps running; `make stop` stops it)...", err=True)
            try:
                devserver.start(home, port, timeout=300)
            except (RuntimeError, TimeoutError, OSError) as exc:
                typer.echo(f"error: the local Prefect server did not start: {_one_line(exc)}\n"
                           f"Nothing was done. See {home / 'prefect-server.log'}; free port {port} or set "
                           "PREFECT_PORT, or point PREFECT_API_URL at a running server.", err=True)
                raise typer.Exit(2) from None
        os.environ["PREFECT_API_URL"] = api
        os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    where = PREFECT_API_URL.value()
    try:
        with get_client(sync_client=True) as client:
            problem = client.api_healthcheck()
    except Exception as exc:
        problem = exc
    if problem is not None:
        typer.echo(
            f"error: cannot reach the Prefect API ({where}): {_one_line(problem)}\n"
            "Nothing was done. Start the local server (`make demo` or `python -m deployments.devserver start`) "
            "and set PREFECT_API_URL, or unset it to let spotline start the project's own server.",
            err=True,
        )
        raise typer.Exit(2)


def run_ingest(**params):
    """The ingest flow, ad hoc; a refused request is one line on stderr and exit code 2."""
    for name, value in params.items():  # Prefect cannot even record a run whose parameters are not UTF-8
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                typer.echo(f"error: input rejected: {name} {value!r} is not valid UTF-8", err=True)
                raise typer.Exit(2) from None
    require_prefect()  # before Prefect is imported: it may choose the server this process talks to
    from prefect.exceptions import FailedRun

    from flows.ingest import ingest as ingest_flow

    try:
        return ingest_flow(**params)
    except FailedRun as exc:  # a refused request is exit code 2; any other failed run is 1
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(2 if str(exc).startswith("input rejected:") else 1) from None


@app.command()
def ingest(
    prefix: Optional[str] = typer.Option(None, help="sync everything under this prefix (default: settings)"),
    key: Optional[str] = typer.Option(None, help="ingest one object (what an S3 event does)"),
    removed: bool = typer.Option(False, help="with --key: the object was deleted"),
    full_sync: Optional[bool] = typer.Option(None, "--full-sync/--no-full-sync", help="delete vanished documents"),
    force: bool = typer.Option(False, help="re-process unchanged documents (cached embeddings are reused)"),
) -> None:
    """Run the ingest-documents flow now (ad hoc)."""
    summary = run_ingest(
        prefix=prefix, key=key, event_name="ObjectRemoved:Delete" if removed else None,
        full_sync=full_sync, force=force,
    )
    typer.echo(summary.model_dump_json(indent=2, exclude={"set_aside"}))
    if summary.set_aside:  # each one is already in the run's log above, once
        typer.echo(f"{len(summary.set_aside)} set aside: the warnings above and the 'ingest-set-aside' artifact "
                   "say which and why")


@app.command()
def query(question: str, k: int = typer.Option(5, "-k"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Top-k chunks for a question, with source, score and text."""
    from spotline.query import search, snippet

    hits = search(question, k)
    if as_json:
        typer.echo(json.dumps([h.model_dump() for h in hits], indent=2))
        return
    for rank, h in enumerate(hits, 1):
        page = f" p.{h.page_start}" if h.page_start else ""
        typer.echo(f"{rank}. [{h.score:.3f}] {h.title} — {h.source_uri}{page}")
        typer.echo("   " + snippet(h.text, question))


@app.command()
def demo(
    corpus: Path = typer.Option(Path("data/sample_corpus")),
    queries: Path = typer.Option(Path("data/demo_queries.json")),
    prefix: str = typer.Option("corpus/help-centre/"),
) -> None:
    """Upload the sample help centre, ingest it, and answer the three demo questions."""
    from spotline.query import search, snippet

    upload(corpus, prefix)
    summary = run_ingest(prefix=prefix)
    typer.echo(
        f"\ningested: {summary.new} new, {summary.changed} changed, {summary.unchanged} unchanged, "
        f"{summary.deleted} deleted, {summary.failed} set aside; {summary.index_chunks} chunks in the index"
    )
    if summary.set_aside:  # each one is already in the run's log above, once
        typer.echo("  the set-aside files are listed once in the run's log above, and in the 'ingest-set-aside' "
                   "artifact, with their reasons")
    ok = True
    for q in json.loads(queries.read_text()):
        hits = search(q["question"], 3)
        top = hits[0] if hits else None
        hit_ok = bool(top) and top.source_uri.endswith("/" + q["expected"])
        ok &= hit_ok
        where = top.source_uri.split(prefix, 1)[-1] if top else "-"
        typer.echo(f"\nQ: {q['question']}")
        typer.echo(f"   {'✓' if hit_ok else '✗'} top hit: {where} — {top.title if top else 'no hits'}"
                   + (f" (score {top.score:.3f})" if top else ""))
        if top:
            typer.echo("   " + snippet(top.text, q["question"]))
    if not ok:
        typer.echo("\nsome demo questions did not find their expected document", err=True)
        raise typer.Exit(1)


prompts_app = typer.Typer(no_args_is_help=True, help="Versioned prompts (prompts/*.yaml) and their golden-set gate.")
llm_app = typer.Typer(no_args_is_help=True, help="Call a model through the LLM gateway.")
app.add_typer(prompts_app, name="prompts")
app.add_typer(llm_app, name="llm")


@prompts_app.command("list")
def prompts_list() -> None:
    """Every prompt with its version, model family and the recorded baseline."""
    from spotline.llm.golden import load_baselines
    from spotline.resources import get_resources

    lib = get_resources().gateway.prompts
    baselines = load_baselines(lib.folder)
    for name in lib.names():
        spec, base = lib.get(name), baselines.get(name)
        mark = (f"baseline v{base['version']}: validity {base['schema_validity']:.0%}, checks "
                f"{base['check_pass_rate']:.0%} on {base['models']}") if base else "no baseline"
        typer.echo(f"{name} v{spec.version} ({spec.family or 'any family'}) - {mark}")


@prompts_app.command("eval")
def prompts_eval(
    names: Optional[list[str]] = typer.Argument(None, help="prompt names (default: all)"),
    use: str = typer.Option("default", help="which route's models to evaluate on"),
    record: bool = typer.Option(False, "--record", help="accept the results as the new baseline"),
) -> None:
    """Run golden sets; exit 1 when schema validity or checks fall below the baseline (the gate)."""
    from spotline.llm.golden import evaluate, gate, load_baselines, record_baseline
    from spotline.resources import get_resources

    gateway = get_resources().gateway
    baselines = load_baselines(gateway.cfg.prompts_dir)
    problems: list[str] = []
    for name in names or gateway.prompts.names():
        report = evaluate(gateway, name, use)
        typer.echo(f"{name} v{report.version} on {report.models}: schema validity {report.schema_validity:.0%} "
                   f"({report.valid}/{report.cases}), checks {report.check_pass_rate:.0%} "
                   f"({report.checks_passed}/{report.checks})")
        for row in report.rows:
            typer.echo(f"  {row['case']}: {'valid' if row['valid'] else 'INVALID'}, checks {row['checks']}"
                       + ("" if row["failures"] == "none" else f" - {row['failures']}"))
        if record:
            record_baseline(gateway.cfg.prompts_dir, report)
            typer.echo(f"  recorded as the baseline for {name} v{report.version}")
        else:
            problems += gate(report, baselines.get(name))
    for p in problems:
        typer.echo(f"GATE: {p}", err=True)
    if problems:
        raise typer.Exit(1)


@llm_app.command("ask")
def llm_ask(
    text: Optional[str] = typer.Argument(None, help="free text (sent as-is to base models)"),
    prompt: Optional[str] = typer.Option(None, help="a prompt name from prompts/"),
    var: list[str] = typer.Option([], help="prompt variable as name=value (repeatable)"),
    use: str = typer.Option("default"),
    max_tokens: Optional[int] = typer.Option(None),
) -> None:
    """One call through the gateway; prints the answer and its usage record as JSON."""
    from spotline.llm.types import LLMCallFailed
    from spotline.resources import get_resources

    variables = dict(v.split("=", 1) for v in var)
    try:
        result = get_resources().gateway.call(use, prompt=prompt, variables=variables, text=text, max_tokens=max_tokens)
    except LLMCallFailed as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps({"text": result.text, "data": result.data, "usage": result.usage.as_dict()}, indent=2))


swarm_app = typer.Typer(no_args_is_help=True, help="The staging swarm and release gate; the judge's calibration.")
app.add_typer(swarm_app, name="swarm")


@app.command()
def staging(
    build: Optional[str] = typer.Option(None, help="good, leaky, inventive, broken-json or slow (default: settings)"),
    port: Optional[int] = typer.Option(None, help="default: settings (8700)"),
) -> None:
    """Serve the reference staging app on loopback until interrupted (its contract: README)."""
    from spotline.settings import get_settings
    from spotline.staging.app import serve

    cfg = get_settings().staging
    serve(cfg.model_copy(update={k: v for k, v in {"build": build, "port": port}.items() if v is not None}))


@swarm_app.command("run")
def swarm_run(
    url: Optional[str] = typer.Option(None, help="the target's chat URL (default: settings, the staging app)"),
    tier: str = typer.Option("auto", help="smoke, full, or auto (full for main, smoke otherwise)"),
    branch: Optional[str] = typer.Option(None, help="the branch being released (decides tier auto)"),
    version: str = typer.Option("latest", help="persona dataset version"),
    threshold: Optional[float] = typer.Option(None, help="failure rate above which the gate fails"),
    judge: Optional[str] = typer.Option(None, help="judge route, or 'none' for checks only"),
    concurrency: Optional[int] = typer.Option(None),
    smoke_size: Optional[int] = typer.Option(None),
) -> None:
    """Run a swarm now, for CI: exit 0 pass, 1 fail, 2 inconclusive (or no verdict at all)."""
    require_prefect()
    from flows.swarm import INCONCLUSIVE_STATE, ReleaseGateFailed, swarm
    from spotline.settings import get_settings

    target = get_settings().swarm.target.model_copy(update={"url": url}).model_dump() if url else None
    state = swarm(target=target, version=version, tier=tier, branch=branch, threshold=threshold, judge_use=judge,
                  concurrency=concurrency, smoke_size=smoke_size, return_state=True)
    outcome = state.result(raise_on_failure=False)
    if state.is_completed():
        typer.echo(json.dumps(outcome, indent=2, default=str))
        raise typer.Exit(0)
    if isinstance(outcome, ReleaseGateFailed):
        typer.echo(f"GATE FAILED: {outcome}", err=True)
        raise typer.Exit(1)
    why = "inconclusive" if state.name == INCONCLUSIVE_STATE else "no verdict"
    typer.echo(f"GATE {why.upper()}: {_one_line(state.message or outcome)}", err=True)
    raise typer.Exit(2)


@swarm_app.command("announce")
def swarm_announce(
    target: str = typer.Option(..., help="the staging chat URL that was just deployed"),
    branch: str = typer.Option(..., help="the branch it was built from (main: full swarm; others: smoke)"),
) -> None:
    """Emit spotline.staging.deployed (what a deploy pipeline calls): the swarm deployment's trigger
    starts a run against TARGET."""
    require_prefect()
    from prefect.events import emit_event

    name = "".join(c if c.isalnum() or c in "-._" else "-" for c in branch)
    event = emit_event("spotline.staging.deployed", resource={"prefect.resource.id": f"spotline.staging.{name}"},
                       payload={"target": target, "branch": branch})
    typer.echo(f"emitted spotline.staging.deployed ({event.id if event else 'events disabled'}) for {branch} at {target}")


@swarm_app.command("calibrate")
def swarm_calibrate(
    use: str = typer.Option("judge", help="the judge route to measure"),
    labelled: Path = typer.Option(Path("data/judge_calibration/answers.jsonl"), help="answers labelled pass/fail"),
    reviews: bool = typer.Option(True, "--reviews/--no-reviews",
                                 help="add failures reviewers marked (false_positive true/false) in swarm runs"),
) -> None:
    """Measure a judge route against labelled answers (TPR, TNR, Cohen's kappa, parse rate) and
    record it: the swarm lets the route gate only at or above `swarm.judge_floor_kappa`."""
    from spotline.resources import get_resources
    from spotline.swarm import judge as jd

    res = get_resources()
    answers = jd.load_labelled(labelled)
    if reviews:
        extra = jd.reviewed(res.store, f"{res.settings.layout.system}swarm/runs/")
        answers += extra
        typer.echo(f"{len(extra)} reviewed failure(s) from swarm runs added to {len(answers) - len(extra)} committed answers")
    cal = jd.calibrate(res.gateway, use, answers, res.settings.swarm.judge_floor_kappa)
    key = jd.save(res.store, res.settings.layout.judge_calibrations, cal)
    typer.echo(f"{use} on {cal.models}: {cal.labelled} answers, parse rate {cal.parse_rate:.0%}, "
               f"TPR {cal.true_positive_rate:.2f}, TNR {cal.true_negative_rate:.2f}, kappa {cal.kappa:.2f} -> "
               f"{'gating' if cal.gating else 'advisory'} (floor {cal.floor:.2f}); recorded at {res.store.uri(key)}")


feedback_app = typer.Typer(no_args_is_help=True, help="Thumbs-down corrections: send, drain into the dataset.")
finetune_app = typer.Typer(no_args_is_help=True, help="LoRA fine-tuning on the corrections, gated by evaluation.")
model_app = typer.Typer(no_args_is_help=True, help="The model registry: versions, aliases, history, rollback.")
app.add_typer(feedback_app, name="feedback")
app.add_typer(finetune_app, name="finetune")
app.add_typer(model_app, name="model")


@feedback_app.command("send")
def feedback_send(events: Path = typer.Argument(..., help="JSON lines, one feedback event each (as the product sends)")) -> None:
    """Put events on the feedback queue (the local spool, or SQS in aws), as the product would."""
    from spotline.finetune.queues import open_queue
    from spotline.settings import get_settings

    s = get_settings()
    queue = open_queue(s.feedback, s.profile, s.home)
    n = 0
    for line in events.read_text().splitlines():
        if line.strip():
            queue.send(line)
            n += 1
    typer.echo(f"queued {n} event(s) on the {s.feedback.queue} queue")


@feedback_app.command("drain")
def feedback_drain() -> None:
    """Run the intake now: validate, de-duplicate, scrub, store; emit the fine-tune trigger at the threshold."""
    require_prefect()
    from flows.feedback import feedback_intake

    typer.echo(json.dumps(feedback_intake(), indent=2, default=str))


@finetune_app.command("run")
def finetune_run(reason: str = typer.Option("ad hoc from the command line")) -> None:
    """Train, evaluate and (only if better) promote now; exit 0 promoted, 3 champion kept, 1 failed."""
    require_prefect()
    from flows.finetune import finetune

    state = finetune(reason=reason, return_state=True)
    outcome = state.result(raise_on_failure=False)
    if state.is_completed() and isinstance(outcome, dict) and outcome.get("running"):
        # Another run (the threshold trigger's, usually) is training: follow it instead of racing it.
        typer.echo(f"{outcome['reason']}: waiting for it to finish", err=True)
        state = _wait_for_run(outcome["running"])
        outcome = state.result(raise_on_failure=False)
    if not state.is_completed():
        typer.echo(f"FINE-TUNE FAILED: {_one_line(state.message or outcome)}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(outcome, indent=2, default=str))
    raise typer.Exit(0 if outcome.get("status") == "promoted" else 3)


@finetune_app.command("calibrate-judge")
def finetune_calibrate_judge(
    use: str = typer.Option("", help="the judge route to measure (default: finetune.judge_use)"),
    pairs: Path = typer.Option(None, help="pairs with a known better answer (default: finetune.judge_pairs)"),
    limit: int = typer.Option(0, help="only the first N pairs (0: all)"),
) -> None:
    """Measure the head-to-head judge on pairs with a known better answer, both orders each (agreement,
    Cohen's kappa, parse rate) and record it: the gate counts the judge's win rate only at or above
    `finetune.judge_floor_kappa`, for the models it was measured on."""
    from spotline.finetune import judge_calibration as jc
    from spotline.resources import get_resources
    from spotline.swarm import judge as jd

    res = get_resources()
    cfg = res.settings.finetune
    use = use or cfg.judge_use
    chosen = jc.load_pairs(pairs or cfg.judge_pairs)
    chosen = chosen[:limit] if limit > 0 else chosen
    cal = jc.calibrate(res.gateway, use, chosen, cfg.judge_floor_kappa)
    key = jd.save(res.store, res.settings.layout.judge_calibrations, cal)
    kinds = ", ".join(f"{k} {v:.0%}" for k, v in jc.by_kind(cal).items())
    typer.echo(f"{use} on {cal.models}: {len(chosen)} pairs x 2 orders, parse rate {cal.parse_rate:.0%}, "
               f"agreement by kind: {kinds}; kappa {cal.kappa:.2f} -> {'gating' if cal.gating else 'advisory'} "
               f"(floor {cal.floor:.2f}); recorded at {res.store.uri(key)}")


def _wait_for_run(run_id: str, poll_s: float = 5.0):
    import time
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(UUID(run_id))
            if run.state is not None and run.state.is_final():
                return run.state
            time.sleep(poll_s)


def _registry():
    from spotline.finetune.registry import Registry
    from spotline.resources import get_resources

    res = get_resources()
    return Registry(res.store, res.settings.layout.models)


@model_app.command("list")
def model_list(history: int = typer.Option(10, help="alias moves to show, newest first")) -> None:
    """Versions, where the aliases point, and the latest alias moves."""
    reg = _registry()
    doc = reg.aliases()
    where: dict[str, str] = {}
    for a, v in sorted(doc.aliases.items()):
        where[v] = f"{where[v]}, {a}" if v in where else a
    for v in reg.versions():
        evaluation = reg.evaluation(v.version) or {}
        loss = (evaluation.get("candidate") or {}).get("holdout_loss")
        typer.echo(f"{v.version:24} {v.created_at[:19]:19} parent={v.parent or '-':24} "
                   f"{'holdout loss ' + format(loss, '.3f') if loss is not None else '':20} {where.get(v.version, '')}")
    for m in doc.history[-history:][::-1]:
        typer.echo(f"  {m.at[:19]} {m.alias}: {m.from_version or '-'} -> {m.to_version} ({m.action}) {m.reason[:90]}")


@model_app.command("rollback")
def model_rollback(reason: str = typer.Option(..., help="why: recorded in the alias history"),
                   alias: str = typer.Option("champion")) -> None:
    """Point the alias back at the version it named before the current one (recorded, atomic)."""
    move = _registry().rollback(alias, reason, actor="cli")
    typer.echo(f"{alias}: {move.from_version} -> {move.to_version} (rollback recorded)")


if __name__ == "__main__":
    app()
