"""The simulator's server-side readings: connection time per route from /metrics, push -> supervisor matching."""

from __future__ import annotations

import asyncio

from clients.sim.livewatch import LiveWatch
from clients.sim.metrics import Metrics
from clients.sim.probe import parse_routes, route_costs

FIRST = """
fieldsync_http_request_duration_seconds_count{method="POST",route="/v1/sync/push",status="200"} 10.0
fieldsync_db_connection_hold_seconds_count{route="/v1/sync/push"} 20.0
fieldsync_db_connection_hold_seconds_sum{route="/v1/sync/push"} 2.0
fieldsync_db_pool_wait_seconds_sum{route="/v1/sync/push"} 1.0
fieldsync_db_connection_hold_seconds_count{route="background"} 3.0
fieldsync_db_connection_hold_seconds_sum{route="background"} 0.3
"""
LAST = """
# HELP fieldsync_db_connection_hold_seconds Time a pool connection stayed checked out
fieldsync_http_request_duration_seconds_count{method="POST",route="/v1/sync/push",status="200"} 100.0
fieldsync_http_request_duration_seconds_count{method="POST",route="/v1/sync/push",status="409"} 10.0
fieldsync_db_connection_hold_seconds_count{route="/v1/sync/push"} 220.0
fieldsync_db_connection_hold_seconds_sum{route="/v1/sync/push"} 35.0
fieldsync_db_pool_wait_seconds_sum{route="/v1/sync/push"} 21.0
fieldsync_db_connection_hold_seconds_count{route="background"} 13.0
fieldsync_db_connection_hold_seconds_sum{route="background"} 1.3
fieldsync_db_connection_hold_seconds_count{route="/v1/sync/pull"} 0.0
"""


def test_route_costs_are_the_shift_difference_per_request() -> None:
    costs = route_costs(parse_routes(FIRST), parse_routes(LAST))
    # 100 requests (110 - 10), 200 acquisitions, 33 s held, 20 s waited over the shift
    assert costs["/v1/sync/push"] == {"requests": 100, "acquires": 200, "hold_ms_per_request": 330.0,
                                      "wait_ms_per_acquire": 100.0, "hold_s": 33.0}
    # no requests: the background loops are per acquisition; a route never acquiring is left out
    assert costs["background"]["hold_ms_per_request"] == 100.0
    assert list(costs) == ["/v1/sync/push", "background"]


def test_live_events_are_matched_to_pushes_by_ticket_version() -> None:
    w, m = LiveWatch(), Metrics()
    w.push_answered("t1", 3, sent=10.0, answered=10.5)
    w.push_answered("t1", 3, sent=20.0, answered=20.5)  # a replayed answer later does not move the commit
    w.push_answered("t2", 7, sent=11.0, answered=11.2)  # its event never comes
    w.seen[("t1", 3)] = 10.6
    w._frame("sanitation", {"type": "event", "position": 42, "ticket_id": "t9", "ticket": {"version": 1}})
    asyncio.run(w.stop(m))
    assert [round(x) for x in m.latency["live_event"]] == [100]  # event - answer
    assert [round(x) for x in m.latency["live_event_sent"]] == [600]  # event - send
    assert m.counters["live_events_unmatched"] == 1
    assert w.position == {"sanitation": 42} and ("t9", 1) in w.seen
