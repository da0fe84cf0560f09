"""The node daemon: dials the panel, runs servers, serves files and SFTP.

It imports ``hostplane.protocol`` and small helpers from ``hostplane.core``,
never the panel's domains, models or database layer.
"""
