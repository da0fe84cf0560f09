"""Event-bus topics the gateway and the servers domain agree on."""

from __future__ import annotations


def node_commands(node_id: str) -> str:
    """Messages for one node's agent (published by the servers domain after commit)."""
    return f"node.{node_id}.commands"


def server_state(server_id: str) -> str:
    """``server.state_changed`` events of one server (published by the servers domain)."""
    return f"server.{server_id}.state"


def server_console(server_id: str) -> str:
    """Console batches of one server (published by the gateway that hears the agent)."""
    return f"server.{server_id}.console"


def server_stats(server_id: str) -> str:
    return f"server.{server_id}.stats"


def server_progress(server_id: str) -> str:
    """``operation_progress`` of one server (install, backup, restore, transfer)."""
    return f"server.{server_id}.progress"


def agent_sessions(node_id: str) -> str:
    """Announcements of a node's newest agent connection: an older one, on any
    replica, hangs up when it hears of a newer one."""
    return f"node.{node_id}.sessions"


def replay_requests(node_id: str) -> str:
    """Requests for recent console lines of a node's servers (answered by the
    replica that holds the node's agent)."""
    return f"node.{node_id}.replay"
