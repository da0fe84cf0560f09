"""Server backups: archives kept on the server's node, tracked here."""
