"""The `glassbox upload` command against curl: the same ~100 MB model
artifact, the same production-style server (gunicorn, one worker), in
alternating order.

    .venv/bin/python bench/client_upload.py [--size-mib 96] [--rounds 3]

Two measures, each a median over the rounds:
- end to end: `glassbox upload ... --model M --flavor transformers` (a new
  process, as a user runs it) against `curl -F artifact=@... -F flavor=...`
  (the README's second way), until the 201 is back. The server's own work
  (hashing, archive checks, extraction, the load check) is in both.
- streaming: the same body sent and read to its end by the server, then
  refused (an unknown flavor is checked after the body is read), through
  the Python API (`Glassbox.upload`) and curl: the transport alone.

Each upload gets bytes of its own (a new zip comment), so no digest-keyed
memo on the server favours whichever goes second.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "client"))

from glassbox_client import BadRequest, Glassbox  # noqa: E402
from upload import build_big_model, free_port, manage  # noqa: E402  (bench/upload.py)

MiB = 1024 * 1024


def restamped(artifact: Path, label: str) -> Path:
    """Other bytes, same model: a new zip comment (only the directory at the end is rewritten)."""
    with zipfile.ZipFile(artifact, "a") as archive:
        archive.comment = label.encode()
    return artifact


def curl_upload(url: str, token: str, model: str, artifact: Path, flavor: str) -> tuple[int, float]:
    start = time.perf_counter()
    result = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            os.devnull,
            "-w",
            "%{http_code}",
            "-H",
            f"Authorization: Token {token}",
            "-F",
            f"artifact=@{artifact}",
            "-F",
            f"flavor={flavor}",
            f"{url}/api/v1/models/{model}/versions/",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout), time.perf_counter() - start


def command_upload(url: str, token: str, model: str, artifact: Path, config: Path) -> tuple[int, float]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "client"),
        "GLASSBOX_URL": url,
        "GLASSBOX_TOKEN": token,
        "GLASSBOX_CONFIG": str(config),
    }
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "glassbox_client.cli",
            "upload",
            str(artifact),
            "--model",
            model,
            "--flavor",
            "transformers",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"glassbox upload failed ({result.returncode}): {result.stderr[-2000:]}")
    return 201, seconds


def api_stream(client: Glassbox, model: str, artifact: Path) -> float:
    start = time.perf_counter()
    try:
        client.upload(model, artifact, flavor="bench-refused-after-the-body")
    except BadRequest:
        return time.perf_counter() - start
    raise SystemExit("the server accepted an unknown flavor")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed (apt-get install curl)")

    scratch = Path(tempfile.mkdtemp(prefix="glassbox-bench-client-", dir=ROOT / "var"))
    try:
        artifact = build_big_model(scratch, args.size_mib)
        size = artifact.stat().st_size
        env = {
            **os.environ,
            "GLASSBOX_DATA_DIR": str(scratch / "data"),
            "DATABASE_URL": f"sqlite:///{scratch / 'data' / 'bench.sqlite3'}",
            "CELERY_BROKER_URL": "memory://",
            "GLASSBOX_MAX_UPLOAD_BYTES": str(4 * 1024 * MiB),
        }
        (scratch / "data").mkdir()
        manage(env, "migrate", "--noinput")
        token = (
            manage(
                env,
                "shell",
                "-c",
                "from django.contrib.auth.models import User, Group; from governance.accounts import token_create;"
                "from registry.services import model_create;"
                "u = User.objects.create_user('bench', password='bench-password-123');"
                "u.groups.add(Group.objects.get(name='engineer'));"
                # Every model belongs to a team; the uploader maintains it.
                "from governance.models import Team, TeamMembership;"
                "TeamMembership.objects.create(team=Team.objects.create(name='bench'), user=u, role='maintainer');"
                "[model_create(actor=u, name=n, risk_tier='low') for n in ('by-curl', 'by-glassbox')];"
                "print(token_create(actor=u, name='bench')[1])",
            )
            .strip()
            .splitlines()[-1]
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "glassbox.wsgi",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                "1",
                "--timeout",
                "900",
                "--log-level",
                "warning",
            ],  # fmt: skip
            cwd=ROOT,
            env=env,
        )
        try:
            deadline = time.time() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)
            client = Glassbox(url, token, timeout=900)
            list(client.models())  # the worker is up and warm
            times: dict[str, list[float]] = {"curl": [], "glassbox": [], "curl-stream": [], "api-stream": []}
            for round_number in range(args.rounds):
                # Alternate who goes first: a warm page cache or a busy core must not favour one.
                order = ("curl", "glassbox") if round_number % 2 == 0 else ("glassbox", "curl")
                for who in order:
                    path = restamped(artifact, f"{who}-{round_number}")
                    if who == "curl":
                        status, seconds = curl_upload(url, token, "by-curl", path, "transformers")
                    else:
                        status, seconds = command_upload(url, token, "by-glassbox", path, scratch / "config.json")
                    if status != 201:
                        raise SystemExit(f"{who} upload answered {status}")
                    times[who].append(seconds)
                for who in reversed(order):
                    path = restamped(artifact, f"{who}-stream-{round_number}")
                    if who == "curl":
                        status, seconds = curl_upload(url, token, "by-curl", path, "bench-refused-after-the-body")
                        if status != 400:
                            raise SystemExit(f"curl streaming run answered {status}")
                        times["curl-stream"].append(seconds)
                    else:
                        times["api-stream"].append(api_stream(client, "by-glassbox", path))
                print(
                    f"round {round_number + 1}: "
                    + ", ".join(f"{name} {values[-1]:.2f} s" for name, values in times.items()),
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(timeout=30)

        def rate(name: str) -> float:
            return size / MiB / statistics.median(times[name])

        print()
        print(f"artifact {size / MiB:.1f} MiB, {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
        print(f"{'measure (median)':<52}{'seconds':>10}{'MiB/s':>10}")
        for name, label in (
            ("curl", "end to end: curl -F (baseline)"),
            ("glassbox", "end to end: glassbox upload (new process)"),
            ("curl-stream", "streaming, refused after the body: curl (baseline)"),
            ("api-stream", "streaming, refused after the body: Glassbox.upload"),
        ):
            print(f"{label:<52}{statistics.median(times[name]):>10.2f}{rate(name):>10.1f}")
        print(f"{'ratio glassbox / curl, end to end (1 = as fast)':<52}{rate('glassbox') / rate('curl'):>10.2f}")
        print(f"{'ratio Glassbox.upload / curl, streaming':<52}{rate('api-stream') / rate('curl-stream'):>10.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
