"""Explanation reports inside other apps' pages (the version page, the review
page, the dossier) without those apps' views knowing about them."""

from django import template

from explanations import selectors
from explanations.forms import ReportRequestForm

register = template.Library()


@register.inclusion_tag("explanations/_version_reports.html", takes_context=True)
def version_explanations(context, version):
    user = context["request"].user
    access = version.model.access_of(user)
    can_read = access.read
    return {
        "version": version,
        "model": version.model,
        "reports": list(selectors.report_list(user=user, version=version)[:20]) if can_read else [],
        "can_read": can_read,
        "can_request": access.request_reports,
        "form": ReportRequestForm(),
        "csrf_token": context.get("csrf_token"),
    }


@register.inclusion_tag("explanations/_evidence.html", takes_context=True)
def version_evidence(context, version, everything: bool = False):
    """The succeeded reports a review rests on; with everything=True (the
    dossier) every report of the version, failed and cancelled ones too."""
    user = context["request"].user
    can_read = version.model.can_be_viewed_by(user)
    if not can_read:
        reports = []
    elif everything:
        reports = list(selectors.report_list(user=user, version=version))
    else:
        reports = list(selectors.succeeded_reports(version=version))
    for report in reports:
        report.top_tokens = selectors.report_top_tokens(report)
    return {"version": version, "reports": reports, "can_read": can_read, "everything": everything}
