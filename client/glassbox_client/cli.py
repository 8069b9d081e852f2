"""The `glassbox` command: the engineer's workflow (login, upload, explain,
submit, roll out, audit) over the Python client. Human tables by default,
`--json` for scripts, exit codes a CI pipeline can branch on."""

from __future__ import annotations

import argparse
import csv
import getpass
import io
import json
import os
import sys
import time
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from . import __version__
from .api import DEFAULT_TIMEOUT, Glassbox
from .config import current_settings, read_config, write_config
from .errors import (
    ConfigError,
    Forbidden,
    GlassboxError,
    LocalInputError,
    PendingReview,
    ReportFailed,
    VersionRejected,
)
from .progress import ProgressBar, human_bytes

# What the upload API takes: mlflow is an MLflow model directory whose flavor the server reads from MLmodel.
FLAVORS = ("transformers", "sklearn", "mlflow")
METHODS = ("shap", "lime", "pfi", "ig", "robustness")

EXIT_CODES = """\
exit codes:
  0   done
  1   error (the server refused the request, or failed)
  2   usage: bad arguments, a missing local file, no or unsafe configuration
  3   refused: not signed in, token expired or revoked (401), not permitted (403)
  4   not found (404)
  5   pending review: the version is still waiting for reviewers (review)
  6   report failed or cancelled (explain --wait, report wait)
  7   server unreachable, timed out, or something else answered (an HTML proxy page)
  8   version rejected (review)
  9   rollout aborted (rollout status --watch)
  10  gave up waiting (--wait-timeout); the job goes on on the server

environment: GLASSBOX_URL and GLASSBOX_TOKEN override the stored login;
GLASSBOX_CONFIG names the config file (default ~/.config/glassbox/config.json);
GLASSBOX_TIMEOUT sets the HTTP timeout in seconds.
"""


# --- output ---------------------------------------------------------------------------


def _width(text: str) -> int:
    # Chinese characters take two columns in a terminal.
    return sum(2 if unicodedata.east_asian_width(char) in ("W", "F") else 1 for char in text)


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    if _width(text) <= limit:
        return text
    out, used = "", 0
    for char in text:
        used += _width(char)
        if used > limit - 1:
            break
        out += char
    return out + "…"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def print_table(headers: list[str], rows: Iterable[list[Any]], *, empty: str = "(none)") -> None:
    cells = [[_cell(value) for value in row] for row in rows]
    if not cells:
        print(empty)
        return
    widths = [max(_width(row[i]) for row in [headers, *cells]) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(value + " " * (widths[i] - _width(value)) for i, value in enumerate(row)).rstrip()

    print(line(headers))
    for row in cells:
        print(line(row))


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _raw(items: Iterable[Any]) -> list[dict]:
    return [item.raw for item in items]


# --- helpers --------------------------------------------------------------------------


def _timeout(args) -> float:
    if getattr(args, "timeout", None):
        return args.timeout
    value = os.environ.get("GLASSBOX_TIMEOUT")
    if value:
        try:
            return float(value)
        except ValueError:
            raise LocalInputError(f"GLASSBOX_TIMEOUT must be a number of seconds (got {value!r})") from None
    return DEFAULT_TIMEOUT


def client_from(args) -> Glassbox:
    settings = current_settings()
    if not settings.url or not settings.token:
        raise ConfigError("not logged in: run `glassbox login` (or set GLASSBOX_URL and GLASSBOX_TOKEN)")
    return Glassbox(settings.url, settings.token, timeout=_timeout(args))


def _json_argument(text: str | None, name: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise LocalInputError(f"{name} must be JSON: {exc}") from None


def _progress_enabled(args) -> bool:
    return not args.no_progress


def _review_line(state) -> str:
    review = state.review
    if review is None:
        return f"{state.model} v{state.version}: {state.status}"
    line = f"{state.model} v{state.version}: {state.status}, review #{review.id} {review.status}, "
    line += f"{review.approvals} of {review.required_approvals} approvals"
    if review.missing_evidence:
        line += f"; missing evidence: {', '.join(map(str, review.missing_evidence))}"
    return line


def _rollout_line(rollout) -> str:
    total = len(rollout.steps) or 1
    weight = "shadow" if rollout.shadow else f"{rollout.candidate_weight}%"
    stable = f"v{rollout.stable}" if rollout.stable is not None else "none"
    line = f"rollout #{rollout.id} {rollout.model} v{rollout.candidate} (stable {stable}): {rollout.status}"
    if not rollout.finished:
        line += f", step {min(rollout.current_step + 1, total)}/{total}, candidate {weight}"
    if rollout.analysis:
        latest = rollout.analysis[0]
        line += f", last analysis {latest.get('verdict', '?')}"
    if rollout.status_reason:
        line += f" ({_clip(rollout.status_reason, 80)})"
    return line


# --- commands -------------------------------------------------------------------------


def cmd_login(args) -> int:
    try:
        stored = read_config()
    except ConfigError:
        stored = {}  # about to be rewritten with 0600
    interactive = sys.stdin.isatty()
    url = args.url or os.environ.get("GLASSBOX_URL")
    if not url:
        default = stored.get("url") or "http://localhost:8000"
        if not interactive:
            url = default
        else:
            url = input(f"Glassbox URL [{default}]: ").strip() or default
    if args.token:
        token = args.token
        client = Glassbox(url, token, timeout=_timeout(args))
        who = "the given token"
        try:
            next(iter(client.models(page_size=1)), None)
        except Forbidden as exc:
            # A scoped token (predict, feedback) may not list models: it is still valid.
            print(f"note: this token may not list models ({exc.code or exc.detail}); stored anyway", file=sys.stderr)
    else:
        username = args.username
        if not username:
            if not interactive:
                raise LocalInputError("give --username and --password-stdin, or --token, when not at a terminal")
            username = input("Username: ").strip()
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        elif interactive:
            password = getpass.getpass("Password: ")
        else:
            raise LocalInputError("give --password-stdin (the password on standard input) when not at a terminal")
        client = Glassbox.from_password(url, username, password, timeout=_timeout(args))
        token = client.token
        who = username
    path = write_config({"url": client.url, "token": token})
    if args.json:
        print_json({"url": client.url, "config": str(path)})
    else:
        print(f"Logged in to {client.url} as {who}; token stored in {path} (readable by you only)")
    return 0


def cmd_logout(args) -> int:
    settings = current_settings()
    stored = read_config(settings.path)
    stored.pop("token", None)
    write_config(stored, settings.path)
    print(f"Token removed from {settings.path}")
    return 0


def cmd_models(args) -> int:
    models = list(client_from(args).models())
    if args.json:
        print_json(_raw(models))
    else:
        print_table(
            ["NAME", "RISK", "TEAM", "TASK", "DESCRIPTION"],
            [[m.name, m.risk_tier, m.team, m.task, _clip(m.description, 50)] for m in models],
        )
    return 0


def cmd_model_create(args) -> int:
    model = client_from(args).model_create(
        args.name, risk_tier=args.risk_tier, task=args.task, description=args.description, team=args.team
    )
    if args.json:
        print_json(model.raw)
    else:
        print(f"Registered {model.name} ({model.risk_tier} risk, team {model.team})")
    return 0


def _print_versions(versions) -> None:
    print_table(
        ["VERSION", "STATUS", "FLAVOR", "SIZE", "BY", "CREATED", "REVIEW"],
        [
            [
                v.version,
                v.status,
                v.flavor,
                human_bytes(v.size),
                v.created_by,
                v.created_at,
                f"{v.review.approvals}/{v.review.required_approvals} {v.review.status}" if v.review else "-",
            ]
            for v in versions
        ],
    )


def cmd_model_show(args) -> int:
    model = client_from(args).model(args.name)
    if args.json:
        print_json(model.raw)
        return 0
    print(f"{model.name}  ({model.risk_tier} risk, team {model.team}, {model.task})")
    if model.description:
        print(model.description)
    print()
    _print_versions(model.versions)
    return 0


def cmd_versions(args) -> int:
    versions = list(client_from(args).versions(args.model))
    if args.json:
        print_json(_raw(versions))
    else:
        _print_versions(versions)
    return 0


def cmd_version(args) -> int:
    version = client_from(args).version(args.model, args.version)
    if args.json:
        print_json(version.raw)
        return 0
    rows = [
        ["status", version.status],
        ["flavor", version.flavor],
        ["sha256", version.sha256],
        ["size", human_bytes(version.size)],
        ["labels", ", ".join(map(str, version.labels))],
        ["metrics", version.metrics],
        ["created", f"{_cell(version.created_at)} by {version.created_by}"],
    ]
    print(f"{version.model} v{version.version}")
    for name, value in rows:
        print(f"  {name:<8} {_cell(value)}")
    if version.review:
        print("  " + _review_line(version))
    return 0


def cmd_upload(args) -> int:
    client = client_from(args)
    metrics = _json_argument(args.metrics, "--metrics")
    if metrics is not None and not isinstance(metrics, dict):
        raise LocalInputError('--metrics must be a JSON object, e.g. {"accuracy": 0.9}')
    bar = ProgressBar(f"Uploading {os.path.basename(args.path)}", enabled=_progress_enabled(args))
    try:
        version = client.upload(
            args.model,
            args.path,
            flavor=args.flavor,
            metrics=metrics,
            description=args.description,
            intended_use=args.intended_use,
            limitations=args.limitations,
            training_data=args.training_data,
            evaluation_data=args.evaluation_data,
            progress=bar.bytes,
            idempotency_key=args.idempotency_key,
        )
    finally:
        bar.close()
    if args.json:
        print_json(version.raw)
    else:
        print(f"Uploaded {version.model} v{version.version} ({version.status}), {human_bytes(version.size)}")
        print(f"  sha256 {version.sha256}")
        print(f"  next: glassbox submit {version.model} {version.version}")
    return 0


def cmd_datasets(args) -> int:
    datasets = list(client_from(args).datasets())
    if args.json:
        print_json(_raw(datasets))
    else:
        print_table(
            ["ID", "NAME", "ROWS", "LABELS", "FORMAT", "BY", "CREATED"],
            [
                [d.id, d.name, d.row_count, ", ".join(map(str, d.labels)), d.format, d.created_by, d.created_at]
                for d in datasets
            ],
        )
    return 0


def cmd_dataset_upload(args) -> int:
    client = client_from(args)
    bar = ProgressBar(f"Uploading {os.path.basename(args.path)}", enabled=_progress_enabled(args))
    try:
        dataset = client.dataset_upload(args.path, name=args.name, description=args.description, progress=bar.bytes)
    finally:
        bar.close()
    if args.json:
        print_json(dataset.raw)
    else:
        print(
            f"Dataset #{dataset.id} {dataset.name}: {dataset.row_count} rows, labels {', '.join(map(str, dataset.labels))}"
        )
    return 0


def cmd_submit(args) -> int:
    state = client_from(args).submit(args.model, args.version)
    if args.json:
        print_json(state.raw)
    else:
        print(_review_line(state))
    return 0


def cmd_review(args) -> int:
    client = client_from(args)
    if args.wait:

        def changed(version) -> None:
            if not args.json:
                print(_review_line(version), file=sys.stderr)

        version = client.review_wait(args.model, args.version, timeout=args.wait_timeout, on_change=changed)
    else:
        version = client.version(args.model, args.version)
    if args.json:
        print_json(version.raw)
    else:
        print(_review_line(version))
        if version.review and version.review.decisions:
            print_table(
                ["REVIEWER", "DECISION", "WHEN", "COMMENT"],
                [[d.reviewer, d.decision, d.created_at, _clip(d.comment, 60)] for d in version.review.decisions],
            )
    if version.status == "rejected":
        raise VersionRejected(f"{version.model} v{version.version} was rejected")
    if version.status == "registered":
        raise PendingReview(f"{version.model} v{version.version} has not been submitted (glassbox submit)")
    if version.status == "in_review" or (version.review and version.review.status == "open"):
        raise PendingReview(f"{version.model} v{version.version} is waiting for reviewers")
    return 0


def cmd_decide(args) -> int:
    decision = client_from(args).decide(args.model, args.version, args.decision, args.comment)
    if args.json:
        print_json(decision.raw)
    else:
        verb = {"approve": "approved", "reject": "rejected"}.get(decision.decision, decision.decision)
        print(f"{decision.reviewer} {verb} {args.model} v{args.version}; the version is now {decision.version_status}")
    return 0


def _wait_for_report(client: Glassbox, report_id: int, args) -> Any:
    bar = ProgressBar(f"Report #{report_id}", enabled=_progress_enabled(args))

    def show(report) -> None:
        left = f", ~{report.remaining_seconds} s left" if report.remaining_seconds else ""
        bar.percent(report.progress or 0, f"{report.status}{left}")

    try:
        return client.report_wait(report_id, progress=show, timeout=args.wait_timeout, poll_interval=args.poll)
    finally:
        bar.close()


def _report_summary(report) -> None:
    took = ""
    if report.started_at and report.finished_at:
        took = f" in {(report.finished_at - report.started_at).total_seconds():.0f} s"
    print(
        f"Report #{report.id} ({report.method}, {report.model} v{report.version}, {report.text_count} texts): {report.status}{took}"
    )
    if report.error:
        print(f"  error: {report.error}")
    if report.succeeded:
        print(f"  export: glassbox report export {report.id} --format csv")


def cmd_explain(args) -> int:
    client = client_from(args)
    if args.dataset is None and not args.text:
        raise LocalInputError("give --dataset ID or --text ... (the texts to explain)")
    params = _json_argument(args.params, "--params") or {}
    if not isinstance(params, dict):
        raise LocalInputError('--params must be a JSON object, e.g. {"max_evals": 500}')
    report = client.report_request(
        args.model,
        args.version,
        method=args.method,
        dataset=args.dataset,
        texts=args.text or None,
        params=params,
        sample=args.sample,
        idempotency_key=args.idempotency_key,
    )
    if not args.json:
        seconds = (report.estimate or {}).get("seconds")
        estimate = f", estimated {seconds:.0f} s" if isinstance(seconds, (int, float)) else ""
        print(f"Report #{report.id} queued ({report.method} on {report.text_count} texts{estimate})", file=sys.stderr)
    if args.wait:
        report = _finish_report(client, report.id, args)
    if args.json:
        print_json(report.raw)
    elif args.wait:
        _report_summary(report)
    else:
        print(f"Report #{report.id}: {report.status}; follow it with: glassbox report wait {report.id}")
    return 0


def _finish_report(client: Glassbox, report_id: int, args):
    try:
        return _wait_for_report(client, report_id, args)
    except ReportFailed as failure:
        if args.json and failure.report is not None:
            print_json(failure.report.raw)
        elif failure.report is not None:
            _report_summary(failure.report)
        raise


def cmd_report_show(args) -> int:
    report = client_from(args).report(args.id)
    if args.json:
        print_json(report.raw)
    else:
        _report_summary(report)
        if not report.finished:
            print(f"  progress {report.progress}%")
    return 0


def cmd_report_wait(args) -> int:
    report = _finish_report(client_from(args), args.id, args)
    if args.json:
        print_json(report.raw)
    else:
        _report_summary(report)
    return 0


def cmd_report_cancel(args) -> int:
    report = client_from(args).report_cancel(args.id)
    if args.json:
        print_json(report.raw)
    else:
        _report_summary(report)
    return 0


def cmd_report_export(args) -> int:
    data = client_from(args).report_export(args.id, format=args.format)
    if args.output and args.output != "-":
        with open(args.output, "wb") as out:
            out.write(data)
        print(f"Wrote {human_bytes(len(data))} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0


def _rollout_of(client: Glassbox, target: str):
    if target.isdigit():
        return client.rollout(int(target))
    return client.rollout_latest(target)


def cmd_rollout_start(args) -> int:
    rollout = client_from(args).rollout_start(
        args.model,
        args.version,
        steps=_json_argument(args.steps, "--steps"),
        thresholds=_json_argument(args.thresholds, "--thresholds"),
        analysis_interval_seconds=args.interval,
        reference_dataset=args.reference_dataset,
        idempotency_key=args.idempotency_key,
    )
    if args.json:
        print_json(rollout.raw)
    else:
        print(_rollout_line(rollout))
        if not rollout.finished:
            print(f"  watch it: glassbox rollout status {rollout.id} --watch")
    return 0


def _print_rollout(rollout) -> None:
    print(_rollout_line(rollout))
    print_table(
        ["STEP", "WEIGHT", "SHADOW", "BAKE", ""],
        [
            [
                i + 1,
                f"{step.get('weight', 0)}%",
                "yes" if step.get("shadow") else "no",
                f"{step.get('bake_seconds', 0)} s",
                "<- now" if i == rollout.current_step and not rollout.finished else "",
            ]
            for i, step in enumerate(rollout.steps)
        ],
    )
    if rollout.analysis:
        print_table(
            ["ANALYSIS", "STEP", "VERDICT", "ACTION", "WINDOW END"],
            [
                [
                    run.get("id"),
                    (run.get("step_index") or 0) + 1,
                    run.get("verdict"),
                    run.get("action"),
                    run.get("window_end"),
                ]
                for run in rollout.analysis
            ],
        )


def cmd_rollout_status(args) -> int:
    client = client_from(args)
    rollout = _rollout_of(client, args.target)
    if not args.watch:
        if args.json:
            print_json(rollout.raw)
        else:
            _print_rollout(rollout)
        return 0
    # Each change is printed as it comes, the aborted state included (then RolloutAborted: exit 9).
    for current in client.rollout_watch(rollout.id, poll_interval=args.poll, timeout=args.wait_timeout):
        if args.json:
            print(json.dumps(current.raw, ensure_ascii=False, default=str), flush=True)
        else:
            print(f"{time.strftime('%H:%M:%S')}  {_rollout_line(current)}", flush=True)
    return 0


def _rollout_action(args, action: str) -> int:
    client = client_from(args)
    if action == "promote":
        rollout = client.rollout_promote(args.id, step=args.step, reason=args.reason)
    elif action == "pause":
        rollout = client.rollout_pause(args.id, reason=args.reason)
    elif action == "resume":
        rollout = client.rollout_resume(args.id)
    else:
        rollout = client.rollout_abort(args.id, reason=args.reason)
    if args.json:
        print_json(rollout.raw)
    else:
        print(_rollout_line(rollout))
    return 0


def cmd_rollout_list(args) -> int:
    rollouts = list(client_from(args).rollouts(args.model))
    if args.json:
        print_json(_raw(rollouts))
    else:
        print_table(
            ["ID", "CANDIDATE", "STABLE", "STATUS", "WEIGHT", "BY", "CREATED"],
            [
                [
                    r.id,
                    f"v{r.candidate}",
                    f"v{r.stable}" if r.stable else "-",
                    r.status,
                    f"{r.candidate_weight}%",
                    r.created_by,
                    r.created_at,
                ]
                for r in rollouts
            ],
        )
    return 0


def cmd_rollback(args) -> int:
    state = client_from(args).rollback(args.model, reason=args.reason)
    if args.json:
        print_json(state.raw)
    else:
        print(f"{state.model}: v{state.stable} serves all traffic again")
    return 0


def cmd_predict(args) -> int:
    texts = list(args.texts)
    if texts == ["-"]:
        texts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    predictions = client_from(args).predict(args.model, texts, key=args.key)
    if args.json:
        print_json(_raw(predictions))
    else:
        print_table(
            ["TEXT", "LABEL", "CONFIDENCE", "VERSION", "ROUTE", "PREDICTION ID"],
            [
                [_clip(text, 40), p.label, p.confidence, f"v{p.version}", p.route, p.prediction_id]
                for text, p in zip(texts, predictions)
            ],
        )
    return 0


def cmd_feedback(args) -> int:
    pairs = []
    for item in args.labels:
        prediction_id, sep, label = item.partition("=")
        if not sep or not prediction_id or not label:
            raise LocalInputError(f"give PREDICTION_ID=LABEL pairs (got {item!r})")
        pairs.append((prediction_id, label))
    result = client_from(args).feedback(args.model, pairs)
    if args.json:
        print_json(result.raw)
    else:
        print(f"Recorded {result.recorded} labels: {result.correct} correct, {result.incorrect} incorrect")
    return 0


AUDIT_COLUMNS = [
    "id",
    "created_at",
    "actor_id",
    "actor_username",
    "action",
    "outcome",
    "object_type",
    "object_id",
    "object_label",
    "model_name",
    "version_number",
    "changes",
    "detail",
    "request_id",
    "ip",
    "user_agent",
    "prev_hash",
    "hash",
]


def _audit_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return "" if value is None else value


def cmd_audit_export(args) -> int:
    events = client_from(args).audit_events(
        since=args.since,
        until=args.until,
        actor=args.actor,
        action=args.action_name,
        model=args.model,
        version=args.version,
        outcome=args.outcome,
        page_size=args.page_size,
    )
    out = open(args.output, "w", encoding="utf-8", newline="") if args.output and args.output != "-" else None  # noqa: SIM115
    stream = out or io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=True)
    count = 0
    try:
        fmt = "json" if args.json and args.format is None else (args.format or "csv")
        if fmt == "csv":
            writer = csv.writer(stream)
            columns = None
            for event in events:
                if columns is None:
                    columns = AUDIT_COLUMNS + [key for key in event.raw if key not in AUDIT_COLUMNS]
                    writer.writerow(columns)
                writer.writerow([_audit_value(event.raw.get(key)) for key in columns])
                count += 1
            if columns is None:
                writer.writerow(AUDIT_COLUMNS)
        else:
            stream.write("[")
            for event in events:
                stream.write(("," if count else "") + "\n" + json.dumps(event.raw, ensure_ascii=False))
                count += 1
            stream.write("\n]\n")
    finally:
        if out is not None:
            out.close()
        else:
            stream.detach()
    if out is not None:
        print(f"Wrote {count} events to {args.output}", file=sys.stderr)
    return 0


# --- the parser ---------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glassbox",
        description="The Glassbox command: register, upload, explain, review and roll out models.",
        epilog=EXIT_CODES,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"glassbox-client {__version__}")
    # Global options, accepted before or after the command (SUPPRESS keeps a
    # subcommand's unset default from hiding a value given before it).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    common.add_argument(
        "--timeout",
        type=float,
        default=argparse.SUPPRESS,
        help=f"HTTP timeout in seconds (default {DEFAULT_TIMEOUT:g})",
    )
    common.add_argument("--no-progress", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--timeout", type=float, default=None, help=f"HTTP timeout in seconds (default {DEFAULT_TIMEOUT:g})"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(group, name: str, handler, help_text: str, **kwargs) -> argparse.ArgumentParser:
        sub = group.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common],
            epilog=EXIT_CODES,
            formatter_class=_Formatter,
            **kwargs,
        )
        sub.set_defaults(handler=handler)
        return sub

    def group(name: str, help_text: str):
        sub = commands.add_parser(
            name, help=help_text, description=help_text, epilog=EXIT_CODES, formatter_class=_Formatter
        )
        return sub.add_subparsers(dest="subcommand", metavar="ACTION", required=True)

    def wait_options(sub) -> None:
        sub.add_argument(
            "--wait-timeout", type=float, default=None, metavar="SECONDS", help="stop waiting after this long (exit 10)"
        )
        sub.add_argument("--poll", type=float, default=1.0, metavar="SECONDS", help="seconds between polls (default 1)")

    sub = command(commands, "login", cmd_login, "sign in and store the URL and token (0600)")
    sub.add_argument("--url", help="the server, e.g. https://glassbox.example.com (default: GLASSBOX_URL or asked)")
    sub.add_argument("--username", help="asked when at a terminal")
    sub.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    sub.add_argument("--token", help="store this API token instead of signing in with a password")

    command(commands, "logout", cmd_logout, "forget the stored token")
    command(commands, "models", cmd_models, "list the models you may read")

    models = group("model", "register or show one model")
    sub = command(models, "create", cmd_model_create, "register a model")
    sub.add_argument("name", help="a lowercase slug")
    sub.add_argument("--risk-tier", required=True, choices=["low", "medium", "high"])
    sub.add_argument("--task", default="text-classification")
    sub.add_argument("--description", default="")
    sub.add_argument("--team", help="the owning team (default: your only team)")
    sub = command(models, "show", cmd_model_show, "one model and its versions")
    sub.add_argument("name")

    sub = command(commands, "versions", cmd_versions, "list a model's versions")
    sub.add_argument("model")
    sub = command(commands, "version", cmd_version, "one version: status, sha256, metrics, review")
    sub.add_argument("model")
    sub.add_argument("version", type=int)

    sub = command(commands, "upload", cmd_upload, "upload a new version (streamed, with a progress bar)")
    sub.add_argument("path", help="zip / tar / tar.gz of a saved transformers model, or a .skops file")
    sub.add_argument("--model", required=True, help="the registered model's name")
    sub.add_argument("--flavor", required=True, choices=FLAVORS)
    sub.add_argument("--metrics", help="JSON object, e.g. '{\"accuracy\": 0.87}'")
    for name in ("description", "intended-use", "limitations", "training-data", "evaluation-data"):
        sub.add_argument(f"--{name}", default="", help="model card field")
    sub.add_argument("--idempotency-key", help="reuse to retry safely (default: a new one)")

    command(commands, "datasets", cmd_datasets, "list evaluation datasets")
    datasets = group("dataset", "upload an evaluation dataset")
    sub = command(datasets, "upload", cmd_dataset_upload, "upload a CSV or JSON-lines file with text and label")
    sub.add_argument("path")
    sub.add_argument("--name", required=True)
    sub.add_argument("--description", default="")

    sub = command(commands, "submit", cmd_submit, "open the review of a registered version")
    sub.add_argument("model")
    sub.add_argument("version", type=int)

    sub = command(
        commands, "review", cmd_review, "where a version's review stands (exit 0 approved, 5 pending, 8 rejected)"
    )
    sub.add_argument("model")
    sub.add_argument("version", type=int)
    sub.add_argument("--wait", action="store_true", help="wait until the review closes")
    sub.add_argument("--wait-timeout", type=float, default=None, metavar="SECONDS")

    sub = command(commands, "decide", cmd_decide, "approve or reject a version (reviewers)")
    sub.add_argument("model")
    sub.add_argument("version", type=int)
    sub.add_argument("decision", choices=["approve", "reject"])
    sub.add_argument("--comment", default="", help="why; required to reject")

    sub = command(
        commands, "explain", cmd_explain, "request an explanation report (--wait: follow it with a progress bar)"
    )
    sub.add_argument("model")
    sub.add_argument("version", type=int)
    sub.add_argument("--method", required=True, choices=METHODS)
    sub.add_argument("--dataset", type=int, help="a dataset id")
    sub.add_argument("--text", action="append", help="a text to explain (repeat the option)")
    sub.add_argument("--sample", type=int, help="explain this many dataset texts, drawn stratified by label")
    sub.add_argument("--params", help="method parameters as JSON, e.g. '{\"max_evals\": 500}'")
    sub.add_argument("--wait", action="store_true", help="wait for the report (exit 6 if it fails)")
    sub.add_argument("--idempotency-key")
    wait_options(sub)

    reports = group("report", "show, wait for, cancel or export a report")
    for name, handler, text in (
        ("show", cmd_report_show, "a report's status"),
        ("wait", cmd_report_wait, "wait for a report with a progress bar (exit 6 if it fails)"),
        ("cancel", cmd_report_cancel, "cancel a queued or running report"),
    ):
        sub = command(reports, name, handler, text)
        sub.add_argument("id", type=int)
        if name == "wait":
            wait_options(sub)
    sub = command(reports, "export", cmd_report_export, "a succeeded report as CSV or JSON")
    sub.add_argument("id", type=int)
    sub.add_argument("--format", choices=["csv", "json"], default="json")
    sub.add_argument("-o", "--output", help="file to write (default: standard output)")

    rollouts = group("rollout", "start, follow and gate rollouts")
    sub = command(rollouts, "start", cmd_rollout_start, "start a rollout of an approved version")
    sub.add_argument("model")
    sub.add_argument("version", type=int)
    sub.add_argument("--steps", help='JSON: [{"weight": 5, "shadow": false, "bake_seconds": 300}, ...]')
    sub.add_argument("--thresholds", help="JSON object of threshold overrides")
    sub.add_argument("--interval", type=int, help="analysis interval in seconds")
    sub.add_argument("--reference-dataset", type=int, help="dataset id to measure input drift against")
    sub.add_argument("--idempotency-key")
    sub = command(rollouts, "status", cmd_rollout_status, "a rollout (by id, or a model's latest); --watch follows it")
    sub.add_argument("target", help="rollout id, or a model name (its latest rollout)")
    sub.add_argument("--watch", action="store_true", help="follow until promoted (exit 0) or aborted (exit 9)")
    wait_options(sub)
    sub.set_defaults(poll=2.0)
    for name, text in (
        ("promote", "skip to the end and promote (--step: one step only)"),
        ("pause", "pause a rollout"),
        ("resume", "resume a paused rollout"),
        ("abort", "abort: all traffic back to the stable version"),
    ):
        sub = command(rollouts, name, lambda args, action=name: _rollout_action(args, action), text)
        sub.add_argument("id", type=int)
        if name != "resume":
            sub.add_argument("--reason", default="")
        if name == "promote":
            sub.add_argument("--step", action="store_true", help="move to the next step only")
    sub = command(rollouts, "list", cmd_rollout_list, "a model's rollouts, newest first")
    sub.add_argument("model")

    sub = command(commands, "rollback", cmd_rollback, "send all traffic back to the previous deployed version")
    sub.add_argument("model")
    sub.add_argument("--reason", required=True)

    sub = command(commands, "predict", cmd_predict, "classify texts with the serving version")
    sub.add_argument("texts", nargs="+", metavar="TEXT", help="texts to classify ('-': one per line on standard input)")
    sub.add_argument("--model", required=True)
    sub.add_argument("--key", help="routing key: the same key gets the same version")

    sub = command(commands, "feedback", cmd_feedback, "send the true labels of earlier predictions")
    sub.add_argument("labels", nargs="+", metavar="PREDICTION_ID=LABEL")
    sub.add_argument("--model", required=True)

    audit = group("audit", "the audit trail")
    sub = command(audit, "export", cmd_audit_export, "export audit events (every page) as CSV or JSON")
    sub.add_argument("--since", help="from this date (YYYY-MM-DD, whole day) or UTC time, inclusive")
    sub.add_argument("--until", help="up to this date or UTC time, inclusive")
    sub.add_argument("--actor")
    sub.add_argument("--action", dest="action_name", metavar="ACTION")
    sub.add_argument("--model")
    sub.add_argument("--version", type=int)
    sub.add_argument("--outcome", choices=["ok", "denied"])
    sub.add_argument("--format", choices=["csv", "json"], default=None, help="default csv (json with --json)")
    sub.add_argument("--page-size", type=int, default=None)
    sub.add_argument("-o", "--output", help="file to write (default: standard output)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except GlassboxError as exc:
        if args.json:
            error = {"message": str(exc), "status": exc.status, "detail": exc.detail, "code": exc.code}
            print(json.dumps({"error": {**error, "exit_code": exc.exit_code}}, ensure_ascii=False))
        print(f"glassbox: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("glassbox: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `glassbox audit export | head`: the reader left; not an error of ours.
        return 0


if __name__ == "__main__":
    sys.exit(main())
