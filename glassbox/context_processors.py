from governance.roles import roles_of


def roles(request):
    user = getattr(request, "user", None)
    return {"user_roles": sorted(roles_of(user)) if user is not None else []}
