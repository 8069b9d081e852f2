from governance.roles import roles_of


def roles(request):
    from django.conf import settings

    user = getattr(request, "user", None)
    return {
        "user_roles": sorted(roles_of(user)) if user is not None else [],
        # Whether passwords sign people in (the header's "Change password" link).
        "local_signin": settings.GLASSBOX_LOCAL_SIGNIN,
    }
