"""The profile page where a person turns notification kinds on and off."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from governance.roles import roles_of
from notifications import services
from notifications.models import NotificationKind, NotificationPreference


class PreferencesForm(forms.Form):
    enabled = forms.MultipleChoiceField(
        choices=NotificationKind.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="E-mail me when",
    )


@login_required
@require_http_methods(["GET", "POST"])
def notification_preferences(request):
    # Notifications concern the platform's roles; an account without one is told nothing.
    if not (roles_of(request.user) or request.user.is_superuser):
        raise PermissionDenied
    pref = NotificationPreference.objects.filter(user=request.user).first()
    disabled = set(pref.disabled_kinds) if pref else set()
    if request.method == "POST":
        form = PreferencesForm(request.POST)
        if form.is_valid():
            enabled = set(form.cleaned_data["enabled"])
            services.preferences_update(
                actor=request.user, disabled_kinds=[k for k in NotificationKind.values if k not in enabled]
            )
            messages.success(request, "Your notification settings are saved.")
            return redirect("notifications:preferences")
    else:
        form = PreferencesForm(initial={"enabled": [k for k in NotificationKind.values if k not in disabled]})
    return render(
        request,
        "notifications/preferences.html",
        {"form": form, "email": request.user.email},
    )
