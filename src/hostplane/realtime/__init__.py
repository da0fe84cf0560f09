"""The ``/ws`` gateway: agents' sessions and clients' subscriptions.

Agents dial in (``/ws?nodeId=..&token=..``); browsers and bots connect with
their token (``/ws?token=..``) and subscribe per server. Everything between
the two travels over the event bus, so an agent connected to one panel
replica feeds clients connected to another.
"""
