"""What the agent does with the panel's file, backup and transfer requests.

Each module maps protocol messages onto the agent's libraries (``files``,
``backups``) and streams; blocking filesystem work runs in threads so the
connection keeps serving consoles meanwhile.
"""
