from governance.models import TeamMembership
from governance.roles import roles_of


def roles(request):
    from django.conf import settings

    user = getattr(request, "user", None)
    if user is None:
        return {"user_roles": [], "user_teams": [], "local_signin": settings.GLASSBOX_LOCAL_SIGNIN}
    teams = []
    if user.is_authenticated:
        memberships = TeamMembership.objects.filter(user=user).select_related("team").order_by("team__name")
        teams = [f"{membership.role} in {membership.team.name}" for membership in memberships]
    return {
        "user_roles": sorted(roles_of(user)),
        "user_teams": teams,
        # Whether passwords sign people in (the header's "Change password" link).
        "local_signin": settings.GLASSBOX_LOCAL_SIGNIN,
    }
