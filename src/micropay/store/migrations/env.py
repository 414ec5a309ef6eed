"""Alembic environment: runs migrations on the connection micropay hands it.

micropay calls Alembic programmatically (:mod:`micropay.store.migrate`), passing
an open SQLAlchemy connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
