"""PostgreSQL adapter: the schema migrations and the asyncpg implementation of `Store`."""
