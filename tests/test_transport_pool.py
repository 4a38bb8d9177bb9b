"""The transport's connection pool decides as httpcore's own does, in one pass (``transport._LinearPool``).

httpcore 1.0.9's assignment pass is quadratic in the connections (encode/httpcore#1035); ours must be the
same function of the pool's state. Both passes are run on the same generated states: connections in
every state a pool meets (closed, expired, idle, busy, for one origin or another), queued and active
requests, a full pool or not. The connections are stand-ins for httpcore's (its ``ConnectionInterface``),
whose answers the test sets; the pools are httpcore's class and ours, unchanged.
"""

from __future__ import annotations

import itertools

import httpcore
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reconciler.factory import transport

ORIGINS = [httpcore.URL(f"https://{host}/").origin for host in ("api.example", "other.example")]


class StandIn(httpcore.ConnectionInterface):
    """A connection in a fixed state, named for the comparison."""

    def __init__(self, name: str, origin: httpcore.Origin, state: str) -> None:
        self.name, self.origin, self.state = name, origin, state

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        return origin == self.origin

    def is_available(self) -> bool:
        return self.state == "idle"

    def has_expired(self) -> bool:
        return self.state == "expired"

    def is_idle(self) -> bool:
        return self.state in ("idle", "expired")

    def is_closed(self) -> bool:
        return self.state == "closed"

    def close(self) -> None:
        self.state = "closed"

    def __repr__(self) -> str:
        return f"{self.name}:{self.state}"


def passed(pool_class: type[httpcore.ConnectionPool], connections, requests, limits):
    """One assignment pass of ``pool_class`` on that state: (closed, pool's connections, each request's)."""
    made = itertools.count()

    class Pool(pool_class):  # type: ignore[misc, valid-type]
        def create_connection(self, origin: httpcore.Origin) -> httpcore.ConnectionInterface:
            return StandIn(f"new{next(made)}", origin, "connecting")

    pool = Pool(max_connections=limits[0], max_keepalive_connections=limits[1])
    pool._connections = [StandIn(name, ORIGINS[o], state) for name, o, state in connections]
    pool._requests = []
    for origin, active in requests:
        pool_request = httpcore._sync.connection_pool.PoolRequest(
            httpcore.Request("GET", httpcore.URL(scheme=b"https", host=ORIGINS[origin].host, port=443, target=b"/"))
        )
        if active:
            pool_request.assign_to_connection(StandIn("busy", ORIGINS[origin], "active"))
        pool._requests.append(pool_request)
    closing = pool._assign_requests_to_connections()
    given_to = [None if r.connection is None else r.connection.name for r in pool._requests]
    return [c.name for c in closing], [c.name for c in pool._connections], given_to


states = st.sampled_from(["idle", "active", "expired", "closed"])
connections = st.lists(st.tuples(st.integers(0, 1), states), max_size=12).map(
    lambda found: [(f"c{n}", origin, state) for n, (origin, state) in enumerate(found)]
)
requests = st.lists(st.tuples(st.integers(0, 1), st.booleans()), max_size=12)
limits = st.tuples(st.integers(1, 14), st.integers(0, 14))


@pytest.mark.skipif(transport._POOL is httpcore.ConnectionPool, reason="httpcore's own pool is used")
@settings(max_examples=400, deadline=None)
@given(connections, requests, limits)
@example(  # a full pool: the oldest idle connection of another origin makes room
    [("c0", 1, "idle"), ("c1", 1, "idle"), ("c2", 0, "active")], [(0, False), (0, False)], (3, 3)
)
def test_the_linear_pool_decides_as_httpcores_own(connections, requests, limits):
    assert passed(transport._LinearPool, connections, requests, limits) == passed(
        httpcore.ConnectionPool, connections, requests, limits
    )


def test_the_transport_uses_the_linear_pool_with_the_httpcore_it_reproduces():
    expected = transport._LinearPool if httpcore.__version__ == "1.0.9" else httpcore.ConnectionPool
    assert type(transport.DeadlineTransport()._pool) is expected
