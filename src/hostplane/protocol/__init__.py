"""Messages between the panel and the node agent.

The only code the agent shares with the panel besides small helpers in
``hostplane.core``; the agent never imports the panel's models.
"""
