"""A fine-tune interrupted on Spot (SIGTERM to its `prefect flow-run execute` process, as ECS does)
commits a checkpoint at once, comes back as the same flow run, resumes from that checkpoint with no
step redone, and finishes: promoted, with the registry and the result to show for it.

The stack is the operations one (real server and automations, the catalog applied, process workers
started like ECS tasks). The base is the tests' tiny Gemma 3 (same code path as the 270M model),
trained long enough to be interrupted mid-training.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.conftest import ROOT
from tests.operations.conftest import flow_process, states_of

pytestmark = [pytest.mark.slow]
PROGRESS_GLOB = "_spotline/checkpoints/ft-*/progress.json"


def _feedback(stack) -> None:
    """The shipped sample feedback, drained into the stack's store (the intake is tested elsewhere)."""
    from spotline.finetune.intake import Scrubber, drain
    from spotline.finetune.queues import SpoolQueue
    from spotline.storage.datasets import Datasets
    from spotline.storage.layout import Layout
    from spotline.storage.local import LocalObjectStore

    queue = SpoolQueue(stack.home / "feedback.sqlite")
    for line in (ROOT / "data" / "feedback" / "sample_events.jsonl").read_text().splitlines():
        queue.send(line)
    stats = drain(queue, Datasets(LocalObjectStore(stack.home / "store"), Layout()),
                  Scrubber.build(b"0123456789abcdef0123456789abcdef"))
    assert stats.corrections == 133


@pytest.mark.timeout(900)
def test_a_fine_tune_interrupted_on_spot_resumes_from_its_sigterm_checkpoint_as_the_same_run(stack, tmp_path):
    from prefect.deployments import run_deployment

    from spotline.finetune.base_model import tiny_config_model
    from spotline.finetune.checkpoints import CheckpointStore
    from spotline.finetune.gguf_lora import write_f32_gguf
    from spotline.finetune.registry import Registry
    from spotline.storage.local import LocalObjectStore

    model, tokenizer = tiny_config_model(seed=3)
    model.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")
    write_f32_gguf(model, tokenizer, tmp_path / "tiny.gguf")
    _feedback(stack)
    tiny = {"provider": "local", "model_id": "tiny-gemma3", "family": "gemma3", "gguf": str(tmp_path / "tiny.gguf"),
            "context_tokens": 512}
    env = {"SPOTLINE_LLM__MODELS": json.dumps({"tiny": tiny}),
           "SPOTLINE_LLM__ROUTES": json.dumps({"default": ["tiny"], "judge": ["tiny"]}),
           "SPOTLINE_FINETUNE__BASE_MODEL": "tiny", "SPOTLINE_FINETUNE__BASE_FOLDER": str(tmp_path / "hf"),
           "SPOTLINE_FINETUNE__JUDGE_USE": "none", "SPOTLINE_FINETUNE__LEARNING_RATE": "0.003",
           "SPOTLINE_FINETUNE__EPOCHS": "12", "SPOTLINE_FINETUNE__MAX_TOKENS": "96",
           "SPOTLINE_FINETUNE__EVAL_MAX_NEW_TOKENS": "8", "SPOTLINE_FINETUNE__FORMAT_FLOOR": "0",
           "SPOTLINE_FINETUNE__MAX_FORMAT_DROP": "1", "SPOTLINE_FINETUNE__MAX_SIMILARITY_DROP": "1",
           # Only the SIGTERM checkpoint and the final one: which one the resume used is then plain.
           "SPOTLINE_FINETUNE__CHECKPOINT_EVERY": "100000"}
    first = run_deployment("finetune/finetune", parameters={"reason": "spot test"}, job_variables={"env": env},
                           timeout=0)
    store = LocalObjectStore(stack.home / "store")

    def reached() -> int:
        found = list((stack.home / "store").glob(PROGRESS_GLOB))
        return json.loads(found[0].read_text())["step"] if found else 0

    deadline = time.monotonic() + 600
    while reached() < 40:
        run = stack.wait(first.id, lambda r: True, 5, "read")
        assert not run.state.is_final() and time.monotonic() < deadline, f"never reached step 40: {run.state}"
        time.sleep(0.2)
    run = stack.wait(first.id, lambda r: True, 5, "read")
    signalled = time.monotonic()
    os.kill(flow_process(run), signal.SIGTERM)
    job = next((stack.home / "store").glob(PROGRESS_GLOB)).parent.name
    ckpts = CheckpointStore(store, f"_spotline/checkpoints/{job}/")
    while not ckpts.commits():
        assert time.monotonic() - signalled < 60, "no checkpoint committed within 60 s of SIGTERM"
        time.sleep(0.05)
    committed = ckpts.commits()[-1]
    assert committed.meta["reason"] == "stop requested" and committed.step >= 40
    final = stack.wait(first.id, lambda r: r.state.is_final(), 600, "the resumed run to finish", poll_s=1)

    assert final.state.is_completed(), final.state
    assert final.run_count == 2  # the same flow run came back once
    assert any(s.name == "AwaitingRetry" for s in states_of(stack, first.id))
    result = final.state.result()
    assert result["resumed_from"] == committed.step and result["lost_steps"] == 0, result
    assert result["status"] == "promoted" and result["steps"] == 27 * 12
    reg = Registry(store, "_spotline/models/")
    assert reg.resolve("champion").version == job
    assert [c.meta["reason"] for c in ckpts.commits()][::-1][:2] == ["stop requested", "interval"]
