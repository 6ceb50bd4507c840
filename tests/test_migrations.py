"""The Alembic migrations agree with the models and go up and down, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import alembic.command
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect

from orchestrator_cli import db
from orchestrator_cli.dbtypes import ExactDecimal
from orchestrator_cli.models import Base

REPO = Path(__file__).resolve().parent.parent
TABLES = {"orchestration_runs", "signal_order_mappings", "run_locks"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A database of its own, never migrated."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/migrations.db"
    return request.getfixturevalue("new_postgres_database")()


@pytest.fixture
def empty_engine(empty_url):
    engine = db.make_engine(empty_url)
    yield engine
    engine.dispose()


def tables(engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_the_head_revision_orch_checks_against_is_the_newest_migration():
    from alembic.script import ScriptDirectory

    assert ScriptDirectory(str(db.migrations_dir())).get_current_head() == db.HEAD_REVISION


def test_commands_that_do_not_migrate_never_import_alembic(tmp_path):
    code = (
        "import sys\n"
        "from orchestrator_cli import db\n"
        f"engine = db.make_engine('sqlite:///{tmp_path}/x.db')\n"
        "db.upgrade_database(engine)\n"
        "for name in [m for m in sys.modules if m.startswith('alembic')]:\n"
        "    del sys.modules[name]\n"
        "db.prepare_database(engine)\n"
        "assert not any(m.startswith('alembic') for m in sys.modules), 'alembic imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_upgrade_check_downgrade_and_upgrade_again(empty_engine):
    head = db.head_revision()
    assert db.upgrade_database(empty_engine) == (None, head)
    assert tables(empty_engine) == TABLES

    with empty_engine.connect() as connection:
        alembic.command.check(db.alembic_config(connection))  # raises on any difference

    with empty_engine.begin() as connection:
        alembic.command.downgrade(db.alembic_config(connection), "base")
    assert tables(empty_engine) == set()
    assert db.current_revision(empty_engine) is None

    assert db.upgrade_database(empty_engine) == (None, head)
    assert db.upgrade_database(empty_engine) == (head, head)
    assert tables(empty_engine) == TABLES


def test_the_comparison_does_see_a_difference(empty_engine):
    """Guards the check above: a model that drifted from the migration is reported."""
    db.upgrade_database(empty_engine)
    drifted = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["signal_order_mappings"].c.price.type = ExactDecimal(24, 6)
    with empty_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs = compare_metadata(context, drifted)
    assert [(diff[0][0], diff[0][3]) for diff in diffs] == [("modify_type", "price")]


def test_the_alembic_command_line_reads_the_url_from_x_or_database_url(tmp_path):
    """`alembic` run from the repository: DATABASE_URL by default, `-x url=` when given."""
    url = f"sqlite:///{tmp_path}/cli/orch.db"
    env = {
        key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "PYTHONPATH")
    }

    def alembic_cli(*args: str, **extra_env: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            cwd=REPO,
            env=env | extra_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    alembic_cli("upgrade", "head", DATABASE_URL=url)
    assert alembic_cli("-x", f"url={url}", "current").strip() == f"{db.head_revision()} (head)"
