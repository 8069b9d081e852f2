from governance.models import TeamMembership
from governance.roles import roles_of


def roles(request):
    user = getattr(request, "user", None)
    if user is None:
        return {"user_roles": [], "user_teams": []}
    teams = []
    if user.is_authenticated:
        memberships = TeamMembership.objects.filter(user=user).select_related("team").order_by("team__name")
        teams = [f"{membership.role} in {membership.team.name}" for membership in memberships]
    return {"user_roles": sorted(roles_of(user)), "user_teams": teams}
