from alembic import context
from sqlalchemy import engine_from_config, pool

from service.store.models import Base

config = context.config
target_metadata = Base.metadata

connectable = config.attributes.get("connection")
if connectable is None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool).connect()
with connectable.begin():
    context.configure(connection=connectable, target_metadata=target_metadata,
                      version_table="rf_alembic_version", render_as_batch=True)
    context.run_migrations()
