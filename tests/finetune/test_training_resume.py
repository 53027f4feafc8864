"""Training survives interruption exactly: killed runs end bit for bit where an uninterrupted run ends.

Each run is a real process (tests/finetune/train_child.py) training a tiny Gemma 3 with LoRA through
the same Trainer the fine-tune flow uses, checkpointing into a real local object store. A kill is a
SIGKILL the process sends itself at a chosen step, or halfway through uploading a checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spotline.finetune.checkpoints import CheckpointStore
from spotline.storage.local import LocalObjectStore

CHILD = Path(__file__).with_name("train_child.py")
PREFIX = "_spotline/checkpoints/test-job/"


def train(store: Path, out: Path, *args: str, expect: int = 0) -> dict | None:
    proc = subprocess.run([sys.executable, str(CHILD), str(store), str(out), *args], capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == expect, proc.stderr[-3000:]
    return json.loads(out.read_text()) if expect == 0 else None


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("reference")
    return train(tmp / "store", tmp / "ref.json")


@pytest.mark.slow
def test_a_run_killed_three_times_ends_with_the_same_weights_and_loss_curve_as_an_uninterrupted_run(tmp_path, reference):
    store, out = tmp_path / "store", tmp_path / "run.json"
    kill = -signal.SIGKILL
    # 40 examples, batch 4: 10 steps per epoch, 3 epochs; a checkpoint every 5 steps.
    train(store, out, "--kill-at-step", "3", expect=kill)   # epoch 0, before the first checkpoint
    train(store, out, "--kill-at-step", "8", expect=kill)   # epoch 0 again, 3 steps past the checkpoint at 5
    train(store, out, "--kill-in-upload", "15", expect=kill)  # epoch 1, inside the upload of step 15's checkpoint
    commits = CheckpointStore(LocalObjectStore(store), PREFIX).commits()
    assert [c.step for c in commits] == [10, 5]  # the half-uploaded step 15 was never committed
    orphans = {o.key.split("/files/")[1].split("/")[0] for o in LocalObjectStore(store).list(PREFIX + "files/")}
    assert len(orphans) == 3  # two committed checkpoints and the killed upload's leftovers (cleaned at the next commit)
    final = train(store, out)

    assert final["resumed_from"] == 10 and final["lost_steps"] == 5  # step 15 had been reached: redone from 10
    assert final["steps"] == reference["steps"] == 30
    assert final["losses"] == reference["losses"]  # every step's loss, bit for bit
    assert final["adapter"] == reference["adapter"]  # every LoRA weight, bit for bit
    left = {o.key.split("/files/")[1].split("/")[0] for o in LocalObjectStore(store).list(PREFIX + "files/")}
    assert len(left) == 2  # keep=2: older checkpoints and the orphaned upload are gone


@pytest.mark.slow
def test_work_lost_to_a_kill_is_measured_and_never_more_than_one_checkpoint_interval(tmp_path):
    store, out = tmp_path / "store", tmp_path / "run.json"
    for step in (4, 9, 14):  # 4 past nothing, then 4 past the checkpoints at 5 and 10
        train(store, out, "--kill-at-step", str(step), "--epochs", "2", expect=-signal.SIGKILL)
    final = train(store, out, "--epochs", "2")
    assert final["resumed_from"] == 10 and final["lost_steps"] == 4 <= 5


@pytest.mark.slow
def test_sigterm_commits_a_checkpoint_at_once_and_the_resumed_run_still_matches(tmp_path, reference):
    store, out = tmp_path / "store", tmp_path / "run.json"
    child = subprocess.Popen([sys.executable, str(CHILD), str(store), str(out), "--sigterm-handler", "--examples", "40",
                              "--epochs", "3", "--checkpoint-every", "1000"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    progress = LocalObjectStore(store)
    deadline = time.monotonic() + 120
    while progress.head(PREFIX + "progress.json") is None or \
            json.loads(progress.get(PREFIX + "progress.json"))["step"] < 4:
        assert child.poll() is None and time.monotonic() < deadline, child.stderr.read() if child.poll() else "slow"
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 75, err[-2000:]  # Interrupted: a checkpoint is committed, the process ended cleanly
    sent = json.loads(Path(str(out) + ".sigterm").read_text())
    commit = CheckpointStore(progress, PREFIX).commits()[0]
    assert commit.meta["reason"] == "stop requested" and commit.step >= sent["step"] >= 4
    assert commit.step < 30  # it stopped early, at the step after the signal
    final = train(store, out, "--checkpoint-every", "1000")
    assert final["resumed_from"] == commit.step and final["lost_steps"] == 0
    assert final["losses"] == reference["losses"] and final["adapter"] == reference["adapter"]


def test_a_checkpoint_whose_files_do_not_match_its_commit_is_skipped_for_the_previous_one(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    ckpts = CheckpointStore(store, PREFIX, keep=3)
    for step in (5, 10):
        folder = tmp_path / f"s{step}"
        folder.mkdir()
        (folder / "state.pt").write_bytes(f"state {step}".encode())
        ckpts.save(step, folder, {})
    newest = ckpts.commits()[0]
    store.put(newest.files["state.pt"]["key"], b"state 1O")  # same size, other bytes: a torn or tampered file
    got = ckpts.latest(tmp_path / "into")
    assert got.step == 5 and (tmp_path / "into" / "state.pt").read_bytes() == b"state 5"
    store.delete(ckpts.commits()[1].files["state.pt"]["key"])  # and a commit naming a missing file
    assert ckpts.latest(tmp_path / "into") is None and not (tmp_path / "into").exists()


def test_only_the_last_k_checkpoints_are_kept_and_uncommitted_uploads_are_cleaned_up(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    ckpts = CheckpointStore(store, PREFIX, keep=2)
    store.put(PREFIX + "files/deadbeef0000/adapter.safetensors", b"half an upload, never committed")
    folder = tmp_path / "f"
    folder.mkdir()
    for step in (1, 2, 3, 4):
        (folder / "state.pt").write_bytes(os.urandom(64))
        ckpts.save(step, folder, {"n": step})
    assert [c.step for c in ckpts.commits()] == [4, 3]
    named = {f["key"] for c in ckpts.commits() for f in c.files.values()}
    assert {o.key for o in store.list(PREFIX + "files/")} == named
