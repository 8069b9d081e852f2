"""A real S3-compatible server for the storage tests: moto's server mode, a
separate process on a free loopback port, started once per session (only
when a storage test asks for it) and stopped after. It checks credentials:
only the access key made at start may use the bucket, so a wrong key is
refused as AWS would refuse it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "glassbox-artifacts-test"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class S3Server:
    url: str
    access_key: str
    secret_key: str
    bucket: str
    process: subprocess.Popen

    def client(self, *, access_key: str | None = None, secret_key: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def keys(self) -> set[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    def storage_backend(self, **overrides) -> dict:
        """STORAGES["artifacts"] as settings.py builds it for ARTIFACT_STORAGE=s3."""
        from botocore.config import Config

        options = {
            "bucket_name": self.bucket,
            "endpoint_url": self.url,
            "region_name": REGION,
            "addressing_style": "path",
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "file_overwrite": False,
            "querystring_auth": False,
            "client_config": Config(
                connect_timeout=2, read_timeout=30, retries={"mode": "standard", "max_attempts": 2}
            ),
        }
        return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {**options, **overrides}}

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment of a process of ours (a worker) on this bucket."""
        return {
            "ARTIFACT_STORAGE": "s3",
            "ARTIFACT_S3_BUCKET": self.bucket,
            "ARTIFACT_S3_ENDPOINT_URL": self.url,
            "ARTIFACT_S3_REGION": REGION,
            "ARTIFACT_S3_ADDRESSING_STYLE": "path",
            "ARTIFACT_S3_CONNECT_TIMEOUT": "2",
            "ARTIFACT_S3_MAX_ATTEMPTS": "2",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            **overrides,
        }


def start_s3_server(*, with_credentials: bool = True) -> S3Server:
    """moto_server on a free loopback port with one bucket. With credentials,
    the first three requests (unauthenticated) make an IAM user allowed s3:*
    and its key; every later request must be signed with that key."""
    import boto3

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"} if with_credentials else dict(os.environ)
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto_server did not start (exit code {process.poll()})")
            time.sleep(0.1)
    url = f"http://127.0.0.1:{port}"
    access_key, secret_key = "bootstrap", "bootstrap"
    if with_credentials:
        iam = boto3.client(
            "iam", endpoint_url=url, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
        )
        iam.create_user(UserName="glassbox")
        key = iam.create_access_key(UserName="glassbox")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="glassbox", PolicyName="artifacts", PolicyDocument=json.dumps(policy))
        access_key, secret_key = key["AccessKeyId"], key["SecretAccessKey"]
    server = S3Server(url, access_key, secret_key, BUCKET, process)
    server.client().create_bucket(Bucket=BUCKET)
    return server


def stop_s3_server(server: S3Server) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server():
    server = start_s3_server()
    yield server
    stop_s3_server(server)


@pytest.fixture
def s3_storage(settings, s3_server, tmp_path) -> S3Server:
    """This (web) process on the S3 bucket, with a cache of its own that
    starts empty: every model and dataset it loads comes from the bucket."""
    settings.STORAGES = {**settings.STORAGES, "artifacts": s3_server.storage_backend()}
    settings.ARTIFACT_STORAGE = "s3"
    settings.ARTIFACT_CACHE_DIR = tmp_path / "web-cache"
    _forget_loaded_models()
    yield s3_server
    _forget_loaded_models()


def _forget_loaded_models() -> None:
    """Loaded predictors and passed load checks are remembered per process by
    digest; a test that must see a model come from the bucket starts without."""
    from registry import artifacts, predictors
    from rollouts import routing

    artifacts._recently_refused.clear()
    predictors.clear_predictor_cache()
    routing._warmed.clear()


def cache_of(data_dir: Path) -> Path:
    return data_dir / "artifact-cache"
