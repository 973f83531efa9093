"""The SQLite state store: ``SQLiteStateStore`` (:mod:`.store`), its writer thread and group
commits (:mod:`.writer`), and the schema with its migrations (:mod:`.schema`)."""
