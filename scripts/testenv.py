"""The set-up around pytest that `make test` runs: Debian packages, then PostgreSQL and Redis.

`make test` calls this script twice, before and after it builds the venv:

    python3 scripts/testenv.py install
        Installs the packages of .ci/debian-packages that are missing: as root, or through `sudo -n`
        when sudo needs no password. Otherwise it stops before anything else is done, with one line
        naming the `apt-get install` command to run as root.

    .venv/bin/python scripts/testenv.py run [pytest arguments]
        Runs pytest against the PostgreSQL and Redis named by TEST_DATABASE_URL and
        TEST_BROKER_URL. When those are not given, it uses the servers that answer on
        127.0.0.1:5432 (user `postgres` without a password, database `test`) and 127.0.0.1:6379
        (database 15). If nothing answers there, it starts throwaway servers on free loopback
        ports, in temp directories. It removes them afterwards, also when the tests fail or are
        interrupted.

Standard library only: the first call runs before the venv exists.
"""

import os
import pwd
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

PACKAGE_LIST = Path(__file__).resolve().parents[1] / ".ci" / "debian-packages"
LOOPBACK = "127.0.0.1"
DEFAULT_POSTGRES = (LOOPBACK, 5432)
DEFAULT_REDIS = (LOOPBACK, 6379)
STARTUP_SECONDS = 60  # how long a throwaway server may take to accept connections

Address = tuple[str, int]


def say(message: str) -> None:
    print(f"make test: {message}", file=sys.stderr, flush=True)


# --- Debian packages -------------------------------------------------------------------------------------------------


def read_package_list(path: Path) -> list[str]:
    """The package names in `path`: one a line; blank lines and `#` comments are ignored."""
    names = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [name for name in names if name]


def debian_package_installed(name: str) -> bool:
    query = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
    return query.stdout == "install ok installed"


def sudo_without_password() -> bool:
    if shutil.which("sudo") is None:
        return False
    return subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0


class CannotInstall(Exception):
    """Packages are missing and this user may not install them; the message names the command to run as root."""


def install_commands(
    packages: list[str],
    *,
    installed: Callable[[str], bool],
    is_root: Callable[[], bool],
    sudo_without_password: Callable[[], bool],
) -> list[list[str]]:
    """The commands that install the missing ones of `packages`; none when nothing is missing."""
    missing = [name for name in packages if not installed(name)]
    if not missing:
        return []
    if is_root():
        as_root = []
    elif sudo_without_password():
        as_root = ["sudo", "-n"]
    else:
        raise CannotInstall(
            f"the tests need Debian packages; run this as root, then `make test` again: "
            f"apt-get install -y {' '.join(missing)}"
        )
    return [
        [*as_root, "apt-get", "update", "-qq"],
        [*as_root, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", *missing],
    ]


def running_as_root() -> bool:
    return os.geteuid() == 0


def install(
    package_list: Path = PACKAGE_LIST,
    *,
    installed: Callable[[str], bool] = debian_package_installed,
    is_root: Callable[[], bool] = running_as_root,
    sudo_without_password: Callable[[], bool] = sudo_without_password,
) -> int:
    """Install the missing packages of `package_list`; 1 with one line naming the command when this user can't."""
    try:
        commands = install_commands(
            read_package_list(package_list),
            installed=installed,
            is_root=is_root,
            sudo_without_password=sudo_without_password,
        )
    except CannotInstall as error:
        say(str(error))
        return 1
    for command in commands:
        say(shlex.join(command))
        # apt's progress lines would bury the test output; its errors still show on stderr.
        if subprocess.run(command, stdout=subprocess.DEVNULL).returncode != 0:
            say(f"failed: {shlex.join(command)}")
            return 1
    return 0


# --- Probes: does a usable server answer at an address? -------------------------------------------------------------


def _read(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := connection.recv(size - len(data))):
        data += chunk
    return data


def postgres_lets_in(address: Address) -> bool:
    """Whether PostgreSQL at `address` lets user `postgres` into database `postgres` without a password."""
    parameters = b"user\0postgres\0database\0postgres\0\0"
    startup = struct.pack("!ii", 8 + len(parameters), 3 << 16) + parameters  # protocol 3.0
    try:
        with socket.create_connection(address, timeout=2) as connection:
            connection.sendall(startup)
            while len(header := _read(connection, 5)) == 5:
                kind, length = header[:1], struct.unpack("!i", header[1:])[0]
                # Authentication, ParameterStatus, BackendKeyData and notices come before ReadyForQuery;
                # anything else is an error (wrong user, no such database, too many clients) or not PostgreSQL.
                if kind not in (b"R", b"S", b"K", b"N", b"Z") or length < 4:
                    return False
                body = _read(connection, length - 4)
                if kind == b"R" and body != b"\0\0\0\0":  # not AuthenticationOk: it wants a password
                    return False
                if kind == b"Z":  # ReadyForQuery: logged in
                    connection.sendall(b"X\0\0\0\x04")  # Terminate, so the server logs no lost connection
                    return True
    except OSError:
        return False
    return False


def redis_answers(address: Address) -> bool:
    """Whether Redis at `address` answers PING without a password."""
    try:
        with socket.create_connection(address, timeout=2) as connection:
            connection.sendall(b"PING\r\n")
            return _read(connection, 7) == b"+PONG\r\n"
    except OSError:
        return False


def postgres_url(address: Address) -> str:
    host, port = address
    return f"postgres://postgres@{host}:{port}/test"


def redis_url(address: Address) -> str:
    host, port = address
    return f"redis://{host}:{port}/15"


# --- Throwaway servers ----------------------------------------------------------------------------------------------


class ServerError(Exception):
    """A throwaway server could not be set up or did not start; the message says why."""


@dataclass
class Throwaway:
    """A server started for this run, and the temp directory that holds its data and log."""

    name: str
    address: Address
    process: subprocess.Popen
    directory: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def postgres_programs() -> Path:
    """The directory holding initdb and postgres: from PATH, else Debian's newest /usr/lib/postgresql/<version>/bin."""
    if on_path := shutil.which("initdb"):
        return Path(on_path).resolve().parent
    debian = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/initdb") if path.parts[-3].isdigit()]
    if not debian:
        raise ServerError("initdb is not installed (the Debian package postgresql has it)")
    return max(debian, key=lambda directory: int(directory.parent.name))


def postgres_account() -> dict:
    """Popen arguments that run initdb and postgres as user `postgres` when we are root: both refuse root."""
    if not running_as_root():
        return {}
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError("running as root, and there is no user `postgres` to run PostgreSQL as") from None
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


@contextmanager
def temp_directory(prefix: str, parent: Path | None, account: dict) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        if account:
            os.chown(directory, account["user"], account["group"])
        yield directory
    finally:
        shutil.rmtree(directory)


def run_logged(command: list, log: Path, account: dict) -> None:
    """Run one set-up step of a server, its output appended to the server's log; ServerError if it fails."""
    with open(log, "ab") as output:
        # In the server's directory: initdb run as `postgres` may not be able to enter ours.
        done = subprocess.run(command, stdout=output, stderr=output, cwd=log.parent, **account)
    if done.returncode != 0:
        raise ServerError(f"{Path(command[0]).name} failed; the log:\n{log.read_text(errors='replace')}")


@contextmanager
def running(
    name: str, command: list[str], log: Path, ready: Callable[[], bool], stop: signal.Signals, account: dict
) -> Iterator[subprocess.Popen]:
    """Start `command`, wait until `ready()`, and stop it with `stop` on the way out."""
    with open(log, "ab") as output:
        # A session of its own: Ctrl-C reaches pytest, which still needs the server for its own teardown.
        process = subprocess.Popen(command, stdout=output, stderr=output, start_new_session=True, **account)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServerError(f"the throwaway {name} did not start; its log:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(stop)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def throwaway_postgres(parent: Path | None = None) -> Iterator[Throwaway]:
    """A PostgreSQL cluster of its own (trust auth, no fsync) on a free loopback port, removed on exit."""
    programs = postgres_programs()
    account = postgres_account()
    with temp_directory("apparate-test-postgres-", parent, account) as directory:
        log = directory / "postgres.log"
        data = directory / "data"
        run_logged([programs / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
                    "--no-sync"], log, account)
        address = (LOOPBACK, free_port())
        # -k: the server's socket and lock file live in the temp dir, clear of the machine's own PostgreSQL.
        command = [programs / "postgres", "-D", data, "-h", LOOPBACK, "-p", str(address[1]), "-k", directory, "-F"]
        ready = partial(postgres_lets_in, address)
        # SIGINT is PostgreSQL's fast shutdown: it ends the sessions the tests left open.
        with running("PostgreSQL", command, log, ready, signal.SIGINT, account) as process:
            # The database of the default URL, so that both URLs have the same shape.
            createdb = [programs / "createdb", "-h", LOOPBACK, "-p", str(address[1]), "-U", "postgres", "test"]
            run_logged(createdb, log, {})
            yield Throwaway("PostgreSQL", address, process, directory)


@contextmanager
def throwaway_redis(parent: Path | None = None) -> Iterator[Throwaway]:
    """A redis-server without persistence on a free loopback port, removed on exit."""
    server = shutil.which("redis-server")
    if server is None:
        raise ServerError("redis-server is not installed (the Debian package redis-server has it)")
    with temp_directory("apparate-test-redis-", parent, {}) as directory:
        address = (LOOPBACK, free_port())
        command = [server, "--bind", LOOPBACK, "--port", str(address[1]), "--save", "", "--appendonly", "no",
                   "--dir", str(directory)]
        ready = partial(redis_answers, address)
        with running("Redis", command, directory / "redis.log", ready, signal.SIGTERM, {}) as process:
            yield Throwaway("Redis", address, process, directory)


# --- The services for one run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    """How to find, name and start one kind of server the tests need."""

    name: str
    variable: str  # the make variable that names an existing server
    answers: Callable[[Address], bool]
    url: Callable[[Address], str]
    throwaway: Callable[[Path | None], AbstractContextManager[Throwaway]]


POSTGRESQL = Service("PostgreSQL", "TEST_DATABASE_URL", postgres_lets_in, postgres_url, throwaway_postgres)
REDIS = Service("Redis", "TEST_BROKER_URL", redis_answers, redis_url, throwaway_redis)


@dataclass
class Services:
    database_url: str
    broker_url: str
    started: list[Throwaway] = field(default_factory=list)


@contextmanager
def suite_services(
    environ: Mapping[str, str],
    postgres: Address = DEFAULT_POSTGRES,
    redis: Address = DEFAULT_REDIS,
    parent: Path | None = None,
) -> Iterator[Services]:
    """The database and broker URLs of a run: given in `environ`, else the servers answering at `postgres` and
    `redis`, else throwaway servers (in temp directories under `parent`) that live until the block ends."""
    started: list[Throwaway] = []
    with ExitStack() as stack:

        def url(service: Service, address: Address) -> str:
            if given := environ.get(service.variable):
                return given
            where = f"{address[0]}:{address[1]}"
            if service.answers(address):
                say(f"using the {service.name} on {where}")
                return service.url(address)
            server = stack.enter_context(service.throwaway(parent))
            started.append(server)
            say(f"no usable {service.name} on {where}: started a throwaway one on port {server.address[1]}")
            return service.url(server.address)

        yield Services(url(POSTGRESQL, postgres), url(REDIS, redis), started)
    if started:
        say(f"removed the throwaway {' and '.join(server.name for server in started)}")


def run_pytest(arguments: list[str], services: Services) -> int:
    env = {**os.environ, "DATABASE_URL": services.database_url, "CELERY_BROKER_URL": services.broker_url}
    pytest = subprocess.Popen([sys.executable, "-m", "pytest", *arguments], env=env)
    # Ctrl-C reaches pytest as well (same process group): wait for its teardown, then remove the servers.
    # A SIGTERM (a cancelled CI job) reaches pytest as a Ctrl-C, so that its fixtures still stop their workers.
    previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_sigterm = signal.signal(signal.SIGTERM, lambda *_: pytest.send_signal(signal.SIGINT))
    try:
        return pytest.wait()
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
        signal.signal(signal.SIGTERM, previous_sigterm)


def run(pytest_arguments: list[str]) -> int:
    try:
        with suite_services(os.environ) as services:
            return run_pytest(pytest_arguments, services)
    except ServerError as error:
        say(str(error))
        return 1


def main(argv: list[str]) -> int:
    match argv:
        case ["install"]:
            return install()
        case ["run", *pytest_arguments]:
            return run(pytest_arguments)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
