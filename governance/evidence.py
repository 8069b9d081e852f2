"""The evidence a decision is made on.

At each approve or reject the decision service takes a snapshot (under the
review's lock) of every succeeded explanation report of the version: what it
ran (method, parameters, dataset and the dataset's digest), what it said
(the digests of its results and fidelity blocks, and the fidelity headline a
reviewer compares) and whether this reviewer had opened it. The snapshot is
stored on the Decision and in the decision's audit event, so the chain binds
it; `audit_verify --deep` later recomputes the digests it names.

Reports that succeed after a decision are not in its snapshot: pages show
them apart, "after the decision". The split is by membership in the
snapshot, never by timestamps, so a report finishing while an approval is
being recorded is on exactly one side of it.
"""

from typing import Any

from django.utils import timezone

METHOD_NAMES = {"shap": "SHAP", "lime": "LIME", "pfi": "PFI", "ig": "IG"}
_ERROR_KEYS = ("additivity_max_error", "completeness_max_error")


def fidelity_headline(fidelity: dict | None) -> dict[str, Any]:
    """The numbers a reviewer weighs first: comprehensiveness AOPC against its
    random baseline, and the method's own exactness check (SHAP's additivity,
    IG's completeness) where it has one."""
    fidelity = fidelity or {}
    comprehensiveness = fidelity.get("comprehensiveness") or {}
    baseline = (fidelity.get("random_baseline") or {}).get("comprehensiveness") or {}
    headline: dict[str, Any] = {
        "comprehensiveness_aopc": comprehensiveness.get("aopc"),
        "random_comprehensiveness_aopc": baseline.get("aopc"),
    }
    for key in _ERROR_KEYS:
        if key in fidelity:
            headline[key] = fidelity[key]
    if fidelity.get("error"):
        headline["error"] = str(fidelity["error"])[:300]
    return headline


def _number(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "n/a"


def report_label(entry: dict[str, Any]) -> str:
    """'SHAP #12 (comp 0.49 vs random 0.06)': one report of a snapshot, as pages show it."""
    name = f"{METHOD_NAMES.get(entry['method'], entry['method'])} #{entry['id']}"
    headline = entry.get("fidelity") or {}
    comp = headline.get("comprehensiveness_aopc")
    if comp is None and headline.get("random_comprehensiveness_aopc") is None:
        return name
    return f"{name} (comp {_number(comp)} vs random {_number(headline.get('random_comprehensiveness_aopc'))})"


def evidence_snapshot(*, review, reviewer) -> dict[str, Any]:
    """The evidence `reviewer` decides on now. Read in one query of the
    reports (a report either had committed its success when it ran, and is
    in, or had not, and is shown after the decision)."""
    from explanations.selectors import evidence_rows
    from governance.models import ReportOpen

    opened = set(
        ReportOpen.objects.filter(review=review, reviewer_id=getattr(reviewer, "pk", None)).values_list(
            "report_id", flat=True
        )
    )
    reports = []
    for row in evidence_rows(version=review.version):
        reports.append(
            {
                "id": row["id"],
                "method": row["method"],
                "params": row["params"],
                "dataset": row["dataset_id"],
                "dataset_sha256": row["dataset__sha256"],
                "text_count": row["text_count"],
                "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
                "results_sha256": row["results_sha256"],
                "fidelity_sha256": row["fidelity_sha256"],
                "fidelity": fidelity_headline(row["fidelity"]),
                "opened": row["id"] in opened,
            }
        )
    return {
        "taken_at": timezone.now().isoformat(),
        "reports": reports,
        "opened": sorted(opened),
    }


def required_reports(*, review, evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """The reports an approver must have opened when the policy asks for it:
    the newest succeeded report of each method the review requires (of each
    method present when the policy names none)."""
    methods = list(review.required_evidence) or sorted({entry["method"] for entry in evidence["reports"]})
    chosen = []
    for method in methods:
        of_method = [entry for entry in evidence["reports"] if entry["method"] == method]
        if of_method:
            chosen.append(max(of_method, key=lambda entry: (entry["finished_at"] or "", entry["id"])))
    return chosen


def unopened_required(*, review, evidence: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"id": entry["id"], "label": f"{METHOD_NAMES.get(entry['method'], entry['method'])} report #{entry['id']}"}
        for entry in required_reports(review=review, evidence=evidence)
        if not entry["opened"]
    ]


def decision_evidence_view(decision, current_reports: list[dict[str, Any]]) -> dict[str, Any]:
    """What pages show of one decision's evidence: the reports it was made
    on, which of them its reviewer opened, and the version's succeeded
    reports that are not in its snapshot ("after the decision")."""
    evidence = decision.evidence or {}
    recorded = "reports" in evidence
    on = evidence.get("reports", [])
    cited = {entry["id"] for entry in on}
    return {
        "recorded": recorded,
        "on": [{"id": entry["id"], "label": report_label(entry), "opened": entry.get("opened", False)} for entry in on],
        "opened": list(evidence.get("opened", [])),
        "after": [
            {"id": entry["id"], "label": report_label(entry)}
            for entry in current_reports
            if recorded and entry["id"] not in cited
        ],
    }


def current_report_entries(version) -> list[dict[str, Any]]:
    """The version's succeeded reports now, shaped like snapshot entries."""
    from explanations.selectors import evidence_rows

    return [
        {"id": row["id"], "method": row["method"], "fidelity": fidelity_headline(row["fidelity"])}
        for row in evidence_rows(version=version)
    ]
