"""Nodes: the machines that run the agent and host servers."""
