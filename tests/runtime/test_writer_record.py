"""The writer slot's holder record under the hand-over race, against a real Prefect server.

A CI run caught it: run A gave the slot back and then deleted its record; run B had taken the
slot in between, saw A's record, and its update hit a 404 once A's delete landed. B crashed.
"""

from __future__ import annotations

import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import VariableCreate

from runtime import writers


class VanishingRecordClient:
    """The real client, except that the old holder's delete lands just before our update."""

    def __init__(self, client, name):
        self._client, self._name, self.vanished = client, name, 0

    def __getattr__(self, attr):
        return getattr(self._client, attr)

    def update_variable(self, variable):
        if not self.vanished:
            self.vanished += 1
            self._client.delete_variable_by_name(self._name)
        return self._client.update_variable(variable)


def test_a_record_deleted_by_the_previous_holder_mid_write_is_written_afresh(prefect_api):
    limit = "spotline-index-vanishing"
    name = writers._record_name(limit)
    ours = {"flow_run_id": "b", "pid": 2}
    with get_client(sync_client=True) as client:
        client.create_variable(VariableCreate(name=name, value={"flow_run_id": "a", "pid": 1}))
        racing = VanishingRecordClient(client, name)
        writers._write_record(racing, limit, ours)
        assert racing.vanished == 1, "the race was staged"
        assert writers._read_record(client, limit) == ours
        client.delete_variable_by_name(name)


def test_the_holder_deletes_its_record_before_it_gives_the_slot_back(prefect_api, monkeypatch):
    """Once the slot is free the next holder may write its record at once: ours must be gone by then."""
    seen = []
    release = writers.release_concurrency_slots_with_lease

    def watching_release(lease_id):
        with get_client(sync_client=True) as client:
            seen.append(writers._read_record(client, writers.writer_limit_name("ordered")))
        return release(lease_id)

    monkeypatch.setattr(writers, "release_concurrency_slots_with_lease", watching_release)

    @flow
    def hold_the_slot() -> dict | None:
        with writers.index_writer("ordered", lease_s=60):
            with get_client(sync_client=True) as client:
                return writers._read_record(client, writers.writer_limit_name("ordered"))

    held = hold_the_slot()
    assert held is not None and held["lease_id"], "the record exists while the slot is held"
    assert seen and seen[-1] is None, "the record was gone when the slot was released"
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(writers.writer_limit_name("ordered")).active_slots == 0


def test_other_server_errors_while_writing_the_record_are_not_swallowed():
    class FailingClient:
        def create_variable(self, variable):
            from prefect.exceptions import ObjectAlreadyExists
            raise ObjectAlreadyExists(http_exc=None)

        def update_variable(self, variable):
            request = httpx.Request("PATCH", "http://x/")
            raise httpx.HTTPStatusError("boom", request=request, response=httpx.Response(500, request=request))

    with pytest.raises(httpx.HTTPStatusError):
        writers._write_record(FailingClient(), "spotline-index-x", {})
