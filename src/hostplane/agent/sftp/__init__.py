"""SFTP access to the servers' files, served by the agent, logins decided by the panel."""

from hostplane.agent.sftp.server import SftpService

__all__ = ["SftpService"]
