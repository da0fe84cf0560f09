"""SFTP logins: the panel's side of a node's question "may this credential open these files?"."""
