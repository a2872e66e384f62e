"""A simulated phone's disk: the outbox is stored one record per seq, and an app restart reads back exactly the
taps not yet acknowledged, in seq order, with the next seq (gap-free numbering survives the restart)."""

from __future__ import annotations

from types import SimpleNamespace

from clients.sim.config import SimConfig
from clients.sim.device import Credentials, Device
from clients.sim.metrics import Metrics
from protocol.push import PushResponse

TICKET = "6f1c1f7e-3f7b-4d61-9a52-0c7d3e0b2a11"


def _device() -> Device:
    fleet = SimpleNamespace(config=SimConfig(), uploads=False, ledger={}, metrics=Metrics(), violations=[])
    return Device(0, Credentials("dev-0", "tok", "crew-a", "sanitation"), fleet)  # type: ignore[arg-type]


async def test_restart_reads_back_the_unacknowledged_taps_in_order() -> None:
    d = _device()
    d.enqueue("set_items", TICKET, {"items": [{"item_type": "sofa", "count": 2}]}, 3)
    d.enqueue("set_resolution", TICKET, {"resolution_code": "collected"}, 3)
    d.enqueue("add_note", TICKET, {"note_id": "n1", "text": "gate code 1234"}, None)
    # the server acknowledged seqs 1 and 2 (one applied, one merged); seq 3 is still waiting
    d.process(PushResponse.model_validate({"server_version": 9, "last_seq": 2, "results": [
        {"seq": 1, "status": "applied", "server_version": 8}, {"seq": 2, "status": "applied", "server_version": 9}]}))
    d.enqueue("set_items", TICKET, {"items": [{"item_type": "tv", "count": 1}]}, 4)
    d.outbox, d.next_seq = [], 1  # the app was killed: memory is gone

    d.restart()
    assert [(m["seq"], m["op"]) for m in d.outbox] == [(3, "add_note"), (4, "set_items")]
    assert d.outbox[0]["args"] == {"note_id": "n1", "text": "gate code 1234"}
    assert d.outbox[1]["args"] == {"items": [{"item_type": "tv", "count": 1}]} and d.outbox[1]["base_version"] == 4
    assert d.next_seq == 5


async def test_a_fresh_device_restarts_empty() -> None:
    d = _device()
    d.restart()
    assert d.outbox == [] and d.next_seq == 1 and d.photos == []
