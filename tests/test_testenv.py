"""scripts/testenv.py, the set-up `make test` runs: the Debian packages it installs or asks for, and the PostgreSQL
and Redis it uses as they are or starts for the run and removes afterwards (real servers, no stand-ins)."""

import shutil
import signal
import tempfile
import time
from pathlib import Path

import psycopg2
import pytest
import redis

from scripts import testenv


@pytest.fixture
def parent():
    """A directory for the throwaway servers' temp directories. Not tmp_path: as root, initdb runs as user
    `postgres`, which may not enter /tmp/pytest-of-root."""
    directory = Path(tempfile.mkdtemp(prefix="testenv-test-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def nowhere() -> testenv.Address:
    """A loopback address where nothing listens, as on a machine whose PostgreSQL and Redis are stopped."""
    return (testenv.LOOPBACK, testenv.free_port())


# --- Debian packages -------------------------------------------------------------------------------------------------


def test_without_root_or_passwordless_sudo_it_stops_with_one_line_naming_the_command(tmp_path, capfd):
    package_list = tmp_path / "debian-packages"
    package_list.write_text("# a comment\ndpkg\napparate-test-absent-package\n\nanother-absent-package  # why\n")

    status = testenv.install(
        package_list,
        installed=testenv.debian_package_installed,  # the real query: dpkg is installed, the other two are not
        is_root=lambda: False,
        sudo_without_password=lambda: False,
    )

    assert status == 1
    out, err = capfd.readouterr()
    assert out == ""
    assert err == (
        "make test: the tests need Debian packages; run this as root, then `make test` again: "
        "apt-get install -y apparate-test-absent-package another-absent-package\n"
    )


def test_as_root_it_updates_once_then_installs_only_the_missing_packages():
    commands = testenv.install_commands(
        ["chromium", "skopeo", "fuse3"],
        installed=lambda name: name == "skopeo",
        is_root=lambda: True,
        sudo_without_password=lambda: pytest.fail("root needs no sudo"),
    )
    assert commands == [
        ["apt-get", "update", "-qq"],
        ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", "chromium", "fuse3"],
    ]


def test_without_root_it_installs_through_sudo_when_sudo_needs_no_password():
    commands = testenv.install_commands(
        ["runc"], installed=lambda name: False, is_root=lambda: False, sudo_without_password=lambda: True
    )
    assert commands == [
        ["sudo", "-n", "apt-get", "update", "-qq"],
        ["sudo", "-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", "runc"],
    ]


def test_when_nothing_is_missing_nothing_runs_and_no_privileges_are_needed():
    assert testenv.install_commands(
        ["runc", "skopeo"],
        installed=lambda name: True,
        is_root=lambda: False,
        sudo_without_password=lambda: False,
    ) == []


def test_the_package_list_is_sorted_and_holds_the_throwaway_servers():
    packages = testenv.read_package_list(testenv.PACKAGE_LIST)
    assert packages == sorted(set(packages))
    assert {"postgresql", "redis-server"} <= set(packages)


# --- PostgreSQL and Redis --------------------------------------------------------------------------------------------


def test_servers_that_answer_are_used_as_they_are_and_nothing_is_started(parent):
    with testenv.throwaway_postgres(parent) as postgres, testenv.throwaway_redis(parent) as broker:
        before = sorted(parent.iterdir())
        with testenv.suite_services({}, postgres=postgres.address, redis=broker.address, parent=parent) as services:
            assert services.database_url == f"postgres://postgres@127.0.0.1:{postgres.address[1]}/test"
            assert services.broker_url == f"redis://127.0.0.1:{broker.address[1]}/15"
            assert services.started == []
            assert sorted(parent.iterdir()) == before
        # used, not owned: both still serve after the run
        assert testenv.postgres_lets_in(postgres.address)
        assert testenv.redis_answers(broker.address)


def test_absent_servers_are_started_for_the_run_and_removed_afterwards(parent):
    with testenv.suite_services({}, postgres=nowhere(), redis=nowhere(), parent=parent) as services:
        postgres, broker = services.started
        assert (postgres.name, broker.name) == ("PostgreSQL", "Redis")
        assert sorted(parent.iterdir()) == sorted([postgres.directory, broker.directory])
        assert services.database_url == f"postgres://postgres@127.0.0.1:{postgres.address[1]}/test"
        assert services.broker_url == f"redis://127.0.0.1:{broker.address[1]}/15"

        connection = psycopg2.connect(services.database_url)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE test_test")  # what pytest-django does first
            cursor.execute("SELECT current_database(), current_user")
            assert cursor.fetchone() == ("test", "postgres")
        connection.close()
        client = redis.Redis.from_url(services.broker_url)
        client.set("apparate", "yes")
        assert client.get("apparate") == b"yes"
        client.close()

    assert list(parent.iterdir()) == []
    assert postgres.process.returncode == 0  # a clean fast shutdown, not a kill
    assert broker.process.returncode == 0
    assert not Path(f"/proc/{postgres.process.pid}").exists()
    assert not Path(f"/proc/{broker.process.pid}").exists()
    assert not testenv.postgres_lets_in(postgres.address)
    assert not testenv.redis_answers(broker.address)


def test_throwaway_servers_are_removed_when_the_run_is_interrupted(parent):
    with (
        pytest.raises(KeyboardInterrupt),
        testenv.suite_services({}, postgres=nowhere(), redis=nowhere(), parent=parent) as services,
    ):
        started = services.started
        raise KeyboardInterrupt
    assert [server.name for server in started] == ["PostgreSQL", "Redis"]
    assert list(parent.iterdir()) == []
    assert all(server.process.poll() is not None for server in started)


def test_given_urls_are_used_verbatim_without_probing_or_starting(parent):
    given = {"TEST_DATABASE_URL": "postgres://ci:secret@db.invalid:6543/ci", "TEST_BROKER_URL": "redis://mq.invalid/3"}
    with testenv.suite_services(given, postgres=nowhere(), redis=nowhere(), parent=parent) as services:
        assert (services.database_url, services.broker_url) == (given["TEST_DATABASE_URL"], given["TEST_BROKER_URL"])
        assert services.started == []
        assert list(parent.iterdir()) == []


def test_a_postgresql_that_asks_for_a_password_does_not_count_and_a_throwaway_one_is_started(parent):
    with testenv.throwaway_postgres(parent) as guarded:
        (guarded.directory / "data" / "pg_hba.conf").write_text("host all all 127.0.0.1/32 scram-sha-256\n")
        guarded.process.send_signal(signal.SIGHUP)  # reload the configuration; it takes effect shortly after
        for _ in range(100):
            if not testenv.postgres_lets_in(guarded.address):
                break
            time.sleep(0.1)
        assert not testenv.postgres_lets_in(guarded.address)
        with testenv.suite_services(
            {"TEST_BROKER_URL": "redis://unused/0"}, postgres=guarded.address, redis=nowhere(), parent=parent
        ) as services:
            [started] = services.started
            assert started.name == "PostgreSQL"
            assert started.address != guarded.address
            assert services.database_url == f"postgres://postgres@127.0.0.1:{started.address[1]}/test"


def test_a_server_of_the_other_kind_does_not_count_as_answering(parent):
    with testenv.throwaway_postgres(parent) as postgres, testenv.throwaway_redis(parent) as broker:
        assert not testenv.postgres_lets_in(broker.address)
        assert not testenv.redis_answers(postgres.address)


def test_pytest_runs_with_the_services_urls_and_its_exit_status_is_the_result(tmp_path):
    (tmp_path / "test_nested.py").write_text(
        "import os\n"
        "def test_urls():\n"
        "    assert os.environ['DATABASE_URL'] == 'postgres://postgres@127.0.0.1:1/test'\n"
        "    assert os.environ['CELERY_BROKER_URL'] == 'redis://127.0.0.1:2/15'\n"
    )
    services = testenv.Services("postgres://postgres@127.0.0.1:1/test", "redis://127.0.0.1:2/15")
    arguments = ["-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path / "test_nested.py")]

    assert testenv.run_pytest(arguments, services) == 0
    (tmp_path / "test_nested.py").write_text("def test_fails():\n    assert False\n")
    assert testenv.run_pytest(arguments, services) == 1
