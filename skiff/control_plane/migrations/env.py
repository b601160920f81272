"""Alembic environment of the control plane: always run by :func:`skiff.control_plane.store.migrate`,
which passes the connection in ``config.attributes["connection"]`` (no alembic.ini, no URL here)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from skiff.control_plane.models import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):  # pragma: no cover - only skiff's migrate() runs this env
    raise RuntimeError("the control-plane migrations run through skiff.control_plane.store.migrate()")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
