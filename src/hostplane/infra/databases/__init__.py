"""Server databases on MariaDB, MySQL and PostgreSQL hosts."""
