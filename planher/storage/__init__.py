"""Storage: the tables, the database facade, shared queries, migrations, backups."""
