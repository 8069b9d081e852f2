"""Server-rendered pages of rollouts and monitoring. Same selectors and
services as the API; the pages hold no rules of their own beyond asking
which buttons to offer."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from glassbox.page_errors import page_errors, service_call
from registry import selectors as registry_selectors
from rollouts import charts, selectors, services
from rollouts.forms import RollbackForm, RolloutActionForm, RolloutStartForm
from rollouts.models import Rollout

Status = Rollout.Status
ANALYSIS_RUNS_SHOWN = 200

# action -> (service, button label, button class, what it does in words)
ACTIONS = {
    "promote": (services.rollout_promote, "Promote now", "", "the candidate becomes stable for all traffic now"),
    "step": (
        services.rollout_promote_step,
        "Next step",
        "",
        "move to the next step now, without waiting for its bake time",
    ),
    "pause": (services.rollout_pause, "Pause", "", "hold the current step; analysis stops acting"),
    "resume": (services.rollout_resume, "Resume", "", "carry on from the current step; its bake time starts again"),
    "abort": (services.rollout_abort, "Abort", "danger", "all traffic back to the stable version at once"),
}


def step_timeline(rollout: Rollout, runs: list) -> list[dict]:
    """Each step with its state and, where known, when it began: the first
    step when the rollout started, a later one when the analysis advanced
    the step before it, the current one at its (re)started bake clock."""
    advanced_at = {}
    for run in runs:
        if run.action == "advanced":
            advanced_at.setdefault(run.step_index, run.window_end)
    timeline = []
    for index, step in enumerate(rollout.steps):
        began = rollout.created_at if index == 0 else advanced_at.get(index - 1)
        if index < rollout.current_step or rollout.status == Status.PROMOTED:
            state = "done"
        elif index == rollout.current_step:
            state = "current" if rollout.is_active else ("stopped" if rollout.status == Status.ABORTED else "done")
            if rollout.is_active and rollout.step_started_at:
                began = rollout.step_started_at
        else:
            state = "pending"
        timeline.append(
            {
                "index": index,
                "number": index + 1,
                "weight": step.get("weight", 0),
                "shadow": bool(step.get("shadow")),
                "bake_seconds": step.get("bake_seconds", 0),
                "state": state,
                "began": began if state != "pending" else None,
            }
        )
    return timeline


def _rollout_context(request, rollout: Rollout, *, forms: dict | None = None, errors: dict | None = None) -> dict:
    runs = list(selectors.analysis_runs(user=request.user, rollout=rollout, limit=ANALYSIS_RUNS_SHOWN))
    forms, errors = forms or {}, errors or {}
    actions = []
    for name, (_, label, css, meaning) in ACTIONS.items():
        actions.append(
            {
                "name": name,
                "label": label,
                "css": css,
                "meaning": f"{meaning} ({rollout.next_step_label})" if name == "step" and rollout.steps else meaning,
                "refusal": rollout.action_refusal(request.user, name),
                "form": forms.get(name) or RolloutActionForm(auto_id=f"id_{name}_%s"),
                "error": errors.get(name),
            }
        )
    # A promotion that still serves (nothing rolled out since) can be undone from its page.
    state = selectors.serving_state(rollout.model)
    undoable = (
        rollout.status == Status.PROMOTED
        and rollout.rolled_back_at is None
        and state is not None
        and state.stable_version_id == rollout.candidate_id
    )
    return {
        "rollout": rollout,
        "model": rollout.model,
        "rollback": _rollback_context(request, rollout.model, state=state) if undoable else None,
        "runs": runs,
        "timeline": step_timeline(rollout, runs),
        "candidate_weight": rollout.candidate_weight,
        "stable_weight": 100 - rollout.candidate_weight,
        "actions": actions,
        "can_act": rollout.model.access_of(request.user).release,
    }


def _rollback_context(request, model, *, state=None, form=None, error: str | None = None) -> dict:
    """The rollback box of a model's pages: what serves, whether the user may
    roll back now (and if not, why and what to do instead), and the form."""
    state = state or selectors.serving_state(model)
    active = selectors.active_rollout(model)
    if state is None:
        refusal = f"{model.name} serves nothing yet: there is nothing to roll back."
    else:
        refusal = state.rollback_refusal(request.user, active)
    return {
        "state": state,
        "refusal": refusal,
        "form": form or RollbackForm(auto_id="id_rollback_%s"),
        "error": error,
        "can_act": model.access_of(request.user).release,
    }


@require_safe
@login_required
@page_errors
def rollout_detail(request, pk: int):
    rollout = selectors.rollout_get(user=request.user, pk=pk)
    return render(request, "rollouts/rollout_detail.html", _rollout_context(request, rollout))


@require_POST
@login_required
@page_errors
def rollout_action(request, pk: int, action: str):
    if action not in ACTIONS:
        raise Http404(f"No rollout action {action!r}.")
    rollout = selectors.rollout_get(user=request.user, pk=pk)
    service = ACTIONS[action][0]
    kwargs = {} if action == "resume" else {"reason": request.POST.get("reason", "")[:2000]}
    if not rollout.model.access_of(request.user).release:
        # The service refuses before it touches anything, and records the refusal.
        service(actor=request.user, rollout=rollout, **kwargs)
        raise PermissionDenied("Only maintainers of the model's team may act on rollouts.")
    form = RolloutActionForm(request.POST, auto_id=f"id_{action}_%s")
    if form.is_valid():
        if action != "resume":
            kwargs["reason"] = form.cleaned_data["reason"]
        done, refusal = service_call(
            request,
            service,
            success=lambda done: f"Rollout #{done.pk}: {action} done; it is {done.status}.",
            actor=request.user,
            rollout=rollout,
            **kwargs,
        )
        if refusal is None:
            return redirect(done.get_absolute_url())
        rollout = selectors.rollout_get(user=request.user, pk=pk)
        context = _rollout_context(request, rollout, forms={action: form}, errors={action: refusal.message})
        return render(request, "rollouts/rollout_detail.html", context, status=refusal.status_code)
    context = _rollout_context(request, rollout, forms={action: form})
    return render(request, "rollouts/rollout_detail.html", context, status=400)


@require_POST
@login_required
@page_errors
def model_rollback(request, name: str):
    """The rollback button of the model's rollouts page and of the promoted
    rollout's page: back to the previous deployed version at once."""
    model = registry_selectors.model_get(user=request.user, name=name)
    if not model.access_of(request.user).release:
        # The service refuses before it touches anything, and records the refusal.
        services.serving_rollback(actor=request.user, model=model, reason=request.POST.get("reason", "")[:2000])
        raise PermissionDenied("Only maintainers of the model's team may roll it back.")
    form = RollbackForm(request.POST, auto_id="id_rollback_%s")
    error, status = None, 400
    if form.is_valid():
        _, refusal = service_call(
            request,
            services.serving_rollback,
            success=lambda state: f"Rolled back {model.name}: v{state.stable_version.number} serves all traffic again.",
            actor=request.user,
            model=model,
            reason=form.cleaned_data["reason"],
        )
        if refusal is None:
            return redirect("rollouts:rollout-list", name=model.name)
        error, status = refusal.message, refusal.status_code
    context = _rollout_list_context(request, model, rollback=_rollback_context(request, model, form=form, error=error))
    return render(request, "rollouts/rollout_list.html", context, status=status)


def _rollout_list_context(request, model, *, form=None, rollback=None) -> dict:
    return {
        "model": model,
        "rollouts": selectors.rollout_list(user=request.user, model=model),
        "serving": selectors.serving_state(model),
        "active": selectors.active_rollout(model),
        "form": form,
        "rollback": rollback or _rollback_context(request, model),
    }


@require_http_methods(["GET", "POST"])
@login_required
@page_errors
def rollout_list(request, name: str):
    """A model's rollouts, what serves it now, and the start form for engineers."""
    model = registry_selectors.model_get(user=request.user, name=name)
    can_start = model.access_of(request.user).release
    form = RolloutStartForm(request.POST or None, model=model) if can_start else None
    status = 200
    if request.method == "POST":
        if not can_start:
            # The service refuses before it reads the candidate, and records the refusal.
            services.rollout_start(actor=request.user, model=model, candidate=None)
            raise PermissionDenied("Only maintainers of the model's team may start rollouts.")
        if form.is_valid():
            rollout, refusal = service_call(
                request,
                services.rollout_start,
                success=lambda rollout: (
                    f"Started rollout #{rollout.pk} of {rollout.candidate}: it is {rollout.status}."
                ),
                actor=request.user,
                model=model,
                **form.service_arguments(),
            )
            if refusal is None:
                return redirect(rollout.get_absolute_url())
            form.add_error(None, refusal.message)
            status = refusal.status_code
        else:
            status = 400
    context = _rollout_list_context(request, model, form=form)
    return render(request, "rollouts/rollout_list.html", context, status=status)


@require_safe
@login_required
@page_errors
def model_monitoring(request, name: str):
    model = registry_selectors.model_get(user=request.user, name=name)
    data = selectors.model_monitoring(user=request.user, model=model, window=request.GET.get("window"))
    limits = selectors.monitoring_thresholds()
    for panel in data["panels"]:
        panel["charts"] = charts.version_charts(
            panel["series"],
            thresholds=limits,
            drift_thresholds=settings.GLASSBOX_DRIFT_THRESHOLDS,
            accuracy_floor=selectors.live_accuracy_floor(panel["version"], limits),
        )
    return render(request, "rollouts/monitoring.html", {"model": model, **data, "limits": limits})
