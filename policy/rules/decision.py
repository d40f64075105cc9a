"""The decision: may this login go ahead without a code, must it give one, or is it refused.

Pure functions of their arguments. The source is decided first, so a campus login never
waits for (or depends on) the directory.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import PolicyConfig
from .network import Source, campus_network_of
from .state import Unreadable, UserState

EXEMPT = "exempt"
CODE_REQUIRED = "code-required"
DENIED = "denied"


@dataclass(frozen=True)
class Decision:
    outcome: str                   # EXEMPT, CODE_REQUIRED or DENIED
    reason: str                    # for the audit line and the helpdesk; no secrets
    directory_error: bool = False  # denied because the directory could not be read


def decide_by_source(source: Source, policy: PolicyConfig) -> Decision | None:
    """EXEMPT for a local or campus source; None when the user's state is needed."""
    if source.local:
        return Decision(EXEMPT, f"local login{source.origin}")
    network = campus_network_of(source, policy.campus_networks)
    if network is not None:
        return Decision(EXEMPT, f"campus source {source}{source.origin} matched {network}")
    return None


def decide(source: Source, state: UserState | Unreadable | None,
           policy: PolicyConfig) -> Decision:
    """The whole decision. ``state`` may be None only when the source alone decides."""
    by_source = decide_by_source(source, policy)
    if by_source is not None:
        return by_source
    where = f"off-campus source {source}{source.origin}"
    if state is None:
        raise ValueError("an off-campus decision needs the user's state")
    if isinstance(state, Unreadable):
        if state.user_unknown:
            return Decision(DENIED, f"{where}; {state.reason}")
        if state.unreachable and policy.on_directory_error == "allow":
            # Only an outage: an ambiguous or malformed entry is refused whatever the policy.
            return Decision(EXEMPT, f"{where}; directory unreachable ({state.reason}) and "
                                    "on_directory_error = allow")
        return Decision(DENIED, f"{where}; directory error ({state.reason})",
                        directory_error=True)
    if state.token is not None:
        return Decision(CODE_REQUIRED, f"{where}; 2-step verification is on")
    if policy.enforcement == "required":
        return Decision(DENIED, f"{where}; no token and enforcement = required")
    for group in policy.required_groups:
        if state.in_group(group):
            return Decision(DENIED, f"{where}; no token and member of required group {group}")
    return Decision(EXEMPT, f"{where}; no token (2-step verification is off, opt-in)")
