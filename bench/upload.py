"""Upload benchmark: stream a 1 GiB model artifact through the API to a
production-style server (gunicorn) and compare with a plain copy of the same
bytes on this disk.

    .venv/bin/python bench/upload.py [--size-mib 1024] [--keep]

Prints the copy's throughput (the baseline), the upload's throughput (end to
end, and up to the last byte sent), their ratio, and the server worker's peak
RSS growth during the upload. Targets from the issue: RSS growth < 64 MiB,
upload throughput >= 0.5 x the copy's.

The artifact is a real transformers model (a BERT whose vocabulary is sized
so its safetensors weights make up the requested size), zipped without
compression, so the server's full path runs: stream + hash, archive checks,
extraction, the load check in a child process, and the store.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def build_big_model(directory: Path, size_mib: int) -> Path:
    """A BERT classifier whose embedding table makes the weights ~size_mib."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    hidden = 128
    vocab_size = max(1000, size_mib * MiB // (hidden * 4))
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 2000)]
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=False, model_max_length=128)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=128,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    model_dir = directory / "model"
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    archive = directory / "big-model.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for path in sorted(model_dir.iterdir()):
            zf.write(path, path.name)
    shutil.rmtree(model_dir)
    return archive


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(env, *args, stdin: str | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, check=True
    )
    return result.stdout


def stream_multipart(
    host, port, path, token, file_path: Path, fields: dict[str, str]
) -> tuple[int, dict, float, float]:
    """POST a multipart body read from disk chunk by chunk (never whole in
    memory). Returns status, JSON body, seconds to last byte sent, seconds to response."""
    boundary = uuid.uuid4().hex
    head = b""
    for name, value in fields.items():
        head += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; filename="{file_path.name}"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + file_path.stat().st_size + len(tail)
    conn = http.client.HTTPConnection(host, port, timeout=900)
    start = time.perf_counter()
    conn.putrequest("POST", path)
    conn.putheader("Authorization", f"Token {token}")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    conn.send(head)
    with open(file_path, "rb") as handle:
        while chunk := handle.read(4 * MiB):
            conn.send(chunk)
    conn.send(tail)
    sent = time.perf_counter() - start
    response = conn.getresponse()
    body = json.loads(response.read() or b"{}")
    done = time.perf_counter() - start
    conn.close()
    return response.status, body, sent, done


class RssSampler(threading.Thread):
    """Samples a process's resident memory every few milliseconds."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="glassbox-bench-upload-", dir=ROOT / "var"))
    print(f"scratch folder: {scratch}")
    try:
        artifact = build_big_model(scratch, args.size_mib)
        size = artifact.stat().st_size
        print(f"artifact: {artifact.name}, {size / MiB:.0f} MiB")

        # Baseline: a plain copy of the same bytes on this disk (cold target, same filesystem).
        copy_target = scratch / "copy.bin"
        start = time.perf_counter()
        shutil.copyfile(artifact, copy_target)
        with open(copy_target, "rb+") as handle:
            os.fsync(handle.fileno())
        copy_seconds = time.perf_counter() - start
        copy_target.unlink()

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
                "u = User.objects.create_user('bench', password='bench-password-123'); u.groups.add(Group.objects.get(name='engineer'));"
                "model_create(actor=u, name='bench-model', risk_tier='low'); print(token_create(actor=u, name='bench')[1])",
            )
            .strip()
            .splitlines()[-1]
        )  # the shell may print a banner first

        port = free_port()
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
            ],
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
            # The master listens before it forks its worker: wait for the worker.
            while not psutil.Process(server.pid).children():
                time.sleep(0.1)
            worker_pid = psutil.Process(server.pid).children()[0].pid
            # Warm the worker (imports, first request) so growth is the upload's alone.
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("GET", "/api/v1/models/bench-model/", headers={"Authorization": f"Token {token}"})
            conn.getresponse().read()
            conn.close()
            baseline_rss = psutil.Process(worker_pid).memory_info().rss
            sampler = RssSampler(worker_pid)
            sampler.start()
            status, body, sent_seconds, total_seconds = stream_multipart(
                "127.0.0.1", port, "/api/v1/models/bench-model/versions/", token, artifact, {"flavor": "transformers"}
            )
            sampler.stop.set()
            sampler.join()
        finally:
            server.terminate()
            server.wait(timeout=30)
        if status != 201:
            print(f"upload failed: {status} {body}")
            sys.exit(1)
        assert body["size"] == size, body

        copy_rate = size / MiB / copy_seconds
        upload_rate = size / MiB / total_seconds
        stream_rate = size / MiB / sent_seconds
        growth = (sampler.peak - baseline_rss) / MiB
        print()
        print(f"{'measure':<44}{'value':>14}")
        print(f"{'plain copy (baseline), MiB/s':<44}{copy_rate:>14.1f}")
        print(f"{'upload end to end (201 received), MiB/s':<44}{upload_rate:>14.1f}")
        print(f"{'upload to last byte sent, MiB/s':<44}{stream_rate:>14.1f}")
        print(f"{'ratio upload / copy (target >= 0.5)':<44}{upload_rate / copy_rate:>14.2f}")
        print(f"{'ratio streaming / copy':<44}{stream_rate / copy_rate:>14.2f}")
        print(f"{'server worker peak RSS growth, MiB (< 64)':<44}{growth:>14.1f}")
        print(f"{'server worker baseline RSS, MiB':<44}{baseline_rss / MiB:>14.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
