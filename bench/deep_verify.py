"""How long `audit_verify --deep` takes: 1,000 succeeded reports and 1 GiB of
artifacts (plus a few datasets), built in a scratch PostgreSQL database and a
temporary artifact store that the benchmark creates and removes itself.

    .venv/bin/python bench/deep_verify.py [--reports 1000] [--artifact-mib 1024] [--artifacts 8] [--workers N]

DATABASE_URL names the server (and a role that may CREATE DATABASE); the
benchmark makes `deepbench_<pid>` there, migrates it, fills it through the
services (report_succeed records each report's digests in the chain; artifact
rows get their version.create events) and drops it at the end, as it removes
its temporary store. Printed: the deep check's time with one worker and with
`--workers`, next to the baselines measured in the same process: hashing the
same artifact bytes alone, and reading the report rows without digests.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "glassbox.settings")
os.environ.setdefault("DJANGO_DEBUG", "0")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--texts", type=int, default=20, help="texts per report (results size)")
    parser.add_argument("--artifact-mib", type=int, default=1024)
    parser.add_argument("--artifacts", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    return parser.parse_args()


def _admin_connection(url: str):
    import psycopg

    parts = urlsplit(url)
    return psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True)


def scratch_database() -> tuple[str, str]:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    if not base.startswith(("postgres://", "postgresql://")):
        sys.exit("DATABASE_URL must point at a PostgreSQL server (the benchmark makes its own database there).")
    name = f"deepbench_{os.getpid()}"
    with _admin_connection(base) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base, urlunsplit(urlsplit(base)._replace(path=f"/{name}"))


def drop_database(base: str, url: str) -> None:
    from django.db import connections

    connections.close_all()
    name = urlsplit(url).path.lstrip("/")
    with _admin_connection(base) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def local_results(index: int, n_texts: int) -> dict:
    """Shaped like a SHAP report's results: per text, tokens and per-label
    values with standard errors (about 40 characters a text)."""
    entries = []
    for t in range(n_texts):
        text = f"第{index}份报告的第{t}条评论：这个手机的质量很好，电池也耐用，就是价格有点贵。"
        n = len(text)
        entries.append(
            {
                "index": t,
                "text": text,
                "tokens": [{"text": ch, "start": i, "end": i + 1} for i, ch in enumerate(text)],
                "predicted_label": "positive",
                "probabilities": {"negative": 0.2, "positive": 0.8},
                "base_values": {"negative": 0.5, "positive": 0.5},
                "values": {
                    label: [((i * 7 + t + index) % 11 - 5) / 37.0 * sign for i in range(n)]
                    for label, sign in (("negative", -1), ("positive", 1))
                },
                "std_errors": {label: [0.01 + (i % 5) / 400.0 for i in range(n)] for label in ("negative", "positive")},
                "additivity_error": 1e-9,
            }
        )
    return {"texts": entries, "labels": ["negative", "positive"], "truncated_count": 0}


FIDELITY = {
    "comprehensiveness": {"1": 0.1, "5": 0.2, "10": 0.3, "20": 0.4, "50": 0.5, "aopc": 0.3},
    "sufficiency": {"1": 0.3, "5": 0.2, "10": 0.1, "20": 0.05, "50": 0.01, "aopc": 0.13},
    "random_baseline": {
        "comprehensiveness": {"aopc": 0.03},
        "sufficiency": {"aopc": 0.4},
    },
    "additivity_max_error": 2e-9,
}


def build(args, store: Path) -> dict:
    import hashlib

    from django.contrib.auth.models import User
    from django.utils import timezone

    from explanations.models import ExplanationReport
    from explanations.services import report_succeed
    from governance.audit import record_event
    from governance.audit_actions import AuditAction
    from registry.artifacts import artifact_key
    from registry.models import Dataset, ModelVersion, RegisteredModel

    user = User.objects.create(username="bench")
    from governance.models import Team

    team, _ = Team.objects.get_or_create(name="bench")  # every model belongs to a team
    model = RegisteredModel.objects.create(name="bench-model", risk_tier="low", created_by=user, team=team)
    per_file = args.artifact_mib * 2**20 // args.artifacts
    chunk = os.urandom(8 * 2**20)
    started = time.perf_counter()
    versions = []
    for number in range(1, args.artifacts + 1):
        # Distinct bytes per file: a random 8 MiB block, repeated, with the file's number in front.
        staging = store / f"staging-{number}"
        digest = hashlib.sha256()
        with open(staging, "wb") as handle:
            written = 0
            head = number.to_bytes(8, "big")
            handle.write(head)
            digest.update(head)
            written += len(head)
            while written < per_file:
                piece = chunk[: per_file - written]
                handle.write(piece)
                digest.update(piece)
                written += len(piece)
        sha256 = digest.hexdigest()
        key = artifact_key(sha256, "zip")
        target = store / key
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
        version = ModelVersion.objects.create(
            model=model,
            number=number,
            flavor="sklearn",
            labels=["negative", "positive"],
            artifact_sha256=sha256,
            artifact_size=per_file,
            artifact_filename="bench.zip",
            artifact_key=key,
            artifact_format="zip",
            created_by=user,
        )
        record_event(
            actor=user,
            action=AuditAction.VERSION_CREATE,
            obj=version,
            changes={"after": {"status": version.status, "sha256": sha256, "flavor": "sklearn"}},
        )
        versions.append(version)
    for number in range(3):
        body = ("text,label\n" + "".join(f"样本{number}-{i},positive\n" for i in range(2000))).encode()
        sha256 = hashlib.sha256(body).hexdigest()
        key = artifact_key(sha256, "csv", kind="datasets")
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        (store / key).write_bytes(body)
        dataset = Dataset.objects.create(
            name=f"bench-{number}",
            format="csv",
            sha256=sha256,
            size=len(body),
            row_count=2000,
            labels=["positive"],
            storage_key=key,
            created_by=user,
        )
        record_event(actor=user, action=AuditAction.DATASET_CREATE, obj=dataset, changes={"after": {"sha256": sha256}})
    built_files = time.perf_counter() - started

    started = time.perf_counter()
    now = timezone.now()
    reports = ExplanationReport.objects.bulk_create(
        ExplanationReport(
            version=versions[i % len(versions)],
            method="shap",
            texts=["x"] * args.texts,
            text_count=args.texts,
            params={"seed": i},
            status="running",
            requested_by=user,
            started_at=now,
        )
        for i in range(args.reports)
    )
    results_bytes = 0
    for index, report in enumerate(reports):
        results = local_results(index, args.texts)
        results_bytes += len(str(results))
        report_succeed(report_id=report.pk, results=results, fidelity=FIDELITY, timings={"combine": 0.1})
    built_reports = time.perf_counter() - started
    return {
        "built_files_s": built_files,
        "built_reports_s": built_reports,
        "artifact_bytes": per_file * args.artifacts,
        "results_mib": results_bytes / 2**20,
    }


def hash_files_baseline(store: Path) -> float:
    import hashlib

    started = time.perf_counter()
    for path in sorted((store / "models").rglob("*")):
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while block := handle.read(4 * 2**20):
                    digest.update(block)
    return time.perf_counter() - started


def read_reports_baseline() -> float:
    from explanations.models import ExplanationReport

    started = time.perf_counter()
    for _ in ExplanationReport.objects.values_list("results", "fidelity").iterator(chunk_size=200):
        pass
    return time.perf_counter() - started


def main() -> None:
    args = parse_args()
    base, url = scratch_database()
    store = Path(tempfile.mkdtemp(prefix="deepbench-"))
    os.environ["DATABASE_URL"] = url
    os.environ["GLASSBOX_DATA_DIR"] = str(store)
    os.environ["ARTIFACT_ROOT"] = str(store)
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        figures = build(args, store)
        from governance.audit_deep import verify_deep

        hash_s = hash_files_baseline(store)
        read_s = read_reports_baseline()
        timings = {}
        for workers in sorted({1, max(1, args.workers)}):
            started = time.perf_counter()
            result = verify_deep(workers=workers)
            timings[workers] = time.perf_counter() - started
            assert not result.mismatches, result.mismatches[:3]
            assert result.reports == args.reports and result.artifact_bytes == figures["artifact_bytes"]
        gib = figures["artifact_bytes"] / 2**30
        print(f"Built {args.artifacts} artifacts ({gib:.2f} GiB) and 3 datasets in {figures['built_files_s']:.1f} s;")
        print(
            f"      {args.reports:,} succeeded reports ({figures['results_mib']:.1f} MiB of results, "
            f"{args.texts} texts each) through report_succeed in {figures['built_reports_s']:.1f} s."
        )
        print(f"Baseline: SHA-256 of the artifact files alone {hash_s:.2f} s ({gib / hash_s:.2f} GiB/s); ")
        print(f"          reading the {args.reports:,} report rows (no digests) {read_s:.2f} s.")
        for workers, seconds in timings.items():
            print(
                f"audit_verify --deep, {workers} worker(s): {seconds:.2f} s "
                f"(x{seconds / (hash_s + read_s):.2f} of the two baselines together)"
            )
    finally:
        drop_database(base, url)
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
