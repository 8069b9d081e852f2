#!/usr/bin/env python3
"""Check a Glassbox dossier export on its own, against a signed checkpoint.

    python3 scripts/verify_dossier.py DOSSIER.json CHECKPOINT.json [--key-env AUDIT_CHECKPOINT_KEY]

Needs nothing but the Python standard library: no database, no Glassbox.
It proves that every event the dossier cites belongs to the audit chain up
to the checkpoint, and that what the dossier says about the evidence is what
those events recorded:

1. every event of the dossier's `chain` segment hashes to its `hash`
   (SHA-256 of the canonical JSON of its fields and `prev_hash`), and each
   one's `prev_hash` is the hash of the event before it;
2. the checkpoint's event is in the segment with the checkpoint's hash (and,
   given the key, the checkpoint's HMAC signature is valid);
3. every cited event ({"id", "hash"} in the dossier) is in the segment with
   that hash (those newer than the checkpoint are listed as not covered by
   it: a later checkpoint proves them);
4. each decision's evidence snapshot is the one in its event's detail, each
   report's digests are those of its explanation.succeed event, and each
   dataset's and the artifact's SHA-256 are those of their creation events.

Exit status 0 when all of it holds; 1 with one line per problem otherwise.
"""

import argparse
import hashlib
import hmac
import json
import os
import sys

HASHED_FIELDS = (
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
)


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_hash(event: dict) -> str:
    content = {name: event[name] for name in HASHED_FIELDS}
    content["prev_hash"] = event["prev_hash"]
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def checkpoint_signature(checkpoint: dict, key: bytes) -> str:
    message = canonical_json({name: checkpoint[name] for name in ("event_id", "hash", "created_at")})
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def _cited(dossier: dict):
    """(what, {"id", "hash"}, check) for every event the dossier cites;
    `check(event)` returns a problem or None."""
    artifact = dossier.get("artifact") or {}
    if artifact.get("event"):
        yield (
            "the artifact's creation",
            artifact["event"],
            lambda event: (
                None
                if (event["changes"].get("after") or {}).get("sha256") == artifact["sha256"]
                else "its SHA-256 is not the artifact's"
            ),
        )
    for dataset in dossier.get("datasets", []):
        if dataset.get("event"):
            yield (
                f"dataset #{dataset['id']}",
                dataset["event"],
                lambda event, dataset=dataset: (
                    None
                    if (event["changes"].get("after") or {}).get("sha256") == dataset["sha256"]
                    else "its SHA-256 is not the dataset's"
                ),
            )
    for report in dossier.get("explanation_reports", []):
        if report.get("event"):
            yield (
                f"report #{report['id']}",
                report["event"],
                lambda event, report=report: (
                    None
                    if (event["detail"].get("results_sha256"), event["detail"].get("fidelity_sha256"))
                    == (report["results_sha256"], report["fidelity_sha256"])
                    else "its digests are not the report's"
                ),
            )
    for review in dossier.get("reviews", []):
        for decision in review.get("decisions", []):
            if decision.get("event"):
                yield (
                    f"decision #{decision['id']}",
                    decision["event"],
                    lambda event, decision=decision: (
                        None
                        if event["detail"].get("evidence") == decision["evidence"]
                        else "its evidence snapshot is not the decision's"
                    ),
                )
    for event in dossier.get("audit_events", []):
        yield f"audit event #{event['id']}", {"id": event["id"], "hash": event["hash"]}, lambda event: None


def verify_dossier(dossier: dict, checkpoint: dict, *, key: bytes | None = None) -> list[str]:
    problems: list[str] = []
    chain = dossier.get("chain")
    if not chain or not chain.get("complete"):
        return ["the dossier carries no complete chain segment (it needs an export by an audit reader)"]
    events = chain["events"]
    by_id = {}
    previous = None
    for event in events:
        if event_hash(event) != event["hash"]:
            problems.append(f"event #{event['id']}: its content does not hash to its hash")
        if previous is not None and (event["id"] <= previous["id"] or event["prev_hash"] != previous["hash"]):
            problems.append(f"event #{event['id']}: it does not link to event #{previous['id']}")
        by_id[event["id"]] = event
        previous = event

    try:
        checkpoint_id = int(checkpoint["event_id"])
        if key is not None and not hmac.compare_digest(checkpoint_signature(checkpoint, key), checkpoint["signature"]):
            problems.append("the checkpoint's signature is invalid (wrong key, or the checkpoint was altered)")
    except (KeyError, TypeError, ValueError):
        return problems + ["not a Glassbox checkpoint"]
    anchor = by_id.get(checkpoint_id)
    if anchor is None:
        problems.append(f"the checkpoint's event #{checkpoint_id} is not in the dossier's chain segment")
    elif anchor["hash"] != checkpoint["hash"]:
        problems.append(f"event #{checkpoint_id} has another hash than the checkpoint says")

    for what, ref, check in _cited(dossier):
        event = by_id.get(ref["id"])
        if event is None:
            problems.append(f"{what}: event #{ref['id']} is not in the chain segment")
        elif event["hash"] != ref["hash"]:
            problems.append(f"{what}: event #{ref['id']} has another hash than the dossier cites")
        elif ref["id"] > checkpoint_id:
            continue  # not covered by this checkpoint: see cited_after_checkpoint
        else:
            problem = check(event)
            if problem:
                problems.append(f"{what}: {problem} (event #{ref['id']})")
    return problems


def cited_after_checkpoint(dossier: dict, checkpoint: dict) -> list[str]:
    """Cited events newer than the checkpoint: in the chain, but not proven by
    it (a later checkpoint proves them)."""
    return [
        f"{what} (event #{ref['id']})" for what, ref, _ in _cited(dossier) if ref["id"] > int(checkpoint["event_id"])
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dossier")
    parser.add_argument("checkpoint")
    parser.add_argument("--key-env", default="AUDIT_CHECKPOINT_KEY", help="environment variable holding the HMAC key")
    args = parser.parse_args()
    with open(args.dossier, encoding="utf-8") as handle:
        dossier = json.load(handle)
    with open(args.checkpoint, encoding="utf-8") as handle:
        checkpoint = json.load(handle)
    key = os.environ.get(args.key_env)
    problems = verify_dossier(dossier, checkpoint, key=key.encode() if key else None)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    if problems:
        return 1
    later = cited_after_checkpoint(dossier, checkpoint)
    for what in later:
        print(f"NOT COVERED by this checkpoint (newer): {what}")
    cited = sum(1 for _ in _cited(dossier)) - len(later)
    signed = "signature checked" if key else "signature NOT checked (no key given)"
    print(f"OK: {cited} cited events belong to the chain up to checkpoint event #{checkpoint['event_id']} ({signed}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
