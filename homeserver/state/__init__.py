"""State resolution: the room state before an event from the states after its prev_events."""
from homeserver.state.resolver import resolve_state
from homeserver.state.store import (
    InMemoryStateResolutionStore,
    StateResolutionStore,
    auth_chain_ids,
)

__all__ = [
    "InMemoryStateResolutionStore",
    "StateResolutionStore",
    "auth_chain_ids",
    "resolve_state",
]
