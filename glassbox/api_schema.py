"""The OpenAPI schema's error answers. Every API error is JSON with a
`detail` string and a `code` (glassbox.api_errors), whichever view or layer raised it,
so every operation documents those bodies once, here, rather than each view
listing the same seven codes by hand."""

ERROR_COMPONENT = "ErrorDetail"

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every 4xx and 503 answer: a readable `detail` and a machine-readable `code` (a stable "
    'snake_case string: the README\'s "Error codes" table); validation errors add `errors` by field, '
    "a 503 adds the `request_id` to quote, and some refusals add their own context.",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "example": "not_found"},
        "errors": {},
        "request_id": {"type": "string"},
    },
    "required": ["detail", "code"],
    "additionalProperties": True,
}

# What any authenticated API operation can answer besides its success.
ERROR_RESPONSES = {
    "400": "The input is invalid.",
    "401": "No valid credentials.",
    "403": "The caller's role does not allow this.",
    "404": "No such object (or not visible to the caller).",
    "405": "The method is not allowed on this path.",
    "409": "The object's current state does not allow this move.",
    "413": "The body or upload is too large.",
    "415": "The request's media type is not accepted.",
    "429": "Too many requests; retry after the Retry-After header's seconds.",
    "503": "A dependency (the database, a model) is unavailable; retry after the Retry-After header's seconds.",
}


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: the shared ErrorDetail component
    on every operation's 4xx and 503 answers (an operation's own documented
    body for a code is kept)."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = ERROR_SCHEMA
    reference = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, description in ERROR_RESPONSES.items():
                documented = responses.get(code)
                if documented is None or documented.get("content", {}).get("application/json", {}).get("schema") == {
                    "type": "object",
                    "additionalProperties": {},
                }:
                    responses[code] = {
                        "description": description,
                        "content": {"application/json": {"schema": reference}},
                    }
    return result


# Who may call each operation (governance/access.py decides; this documents
# it): "reads the model" is a member of the owning team in any role, a
# reviewer, a manager or an admin. A model the caller may not read answers 404.
PUBLIC = "anyone (no credentials)"
ANY_ROLE = "any signed-in user with a global role or a team (lists show only what the caller may read)"
READS_MODEL = "reads the model: a member of the owning team, a reviewer, a manager or an admin"
TEAM_ENGINEER = "an engineer or maintainer of the owning team, or an admin"
TEAM_MAINTAINER = "a maintainer of the owning team, or an admin"
OPERATION_ACCESS = {
    "auth_token_create": PUBLIC,
    "audit_events_list": "a manager or an admin",
    "datasets_list": ANY_ROLE,
    "datasets_create": "the global engineer role, or an admin",
    "models_list": ANY_ROLE,
    "models_create": "an engineer or maintainer of the team named in `team` (default: the caller's only team), "
    "or an admin",
    "models_retrieve": READS_MODEL,
    "models_partial_update": "description: " + TEAM_ENGINEER + "; risk_tier and team: an admin",
    "models_archive": "an admin",
    "models_unarchive": "an admin",
    "versions_partial_update": TEAM_ENGINEER,
    "models_predict": TEAM_ENGINEER,
    "models_feedback": TEAM_ENGINEER,
    "versions_list": READS_MODEL,
    "versions_retrieve": READS_MODEL,
    "versions_create": TEAM_ENGINEER,
    "versions_submit": TEAM_ENGINEER,
    "versions_decisions_list": READS_MODEL,
    "versions_decisions_create": "a reviewer who reads the model; an approval also needs a reviewer outside "
    "the owning team who neither uploaded nor submitted the version",
    "explanations_list": READS_MODEL,
    "explanations_retrieve": READS_MODEL,
    "explanations_export_json": READS_MODEL,
    "explanations_export_csv": READS_MODEL,
    "explanations_export_global_csv": READS_MODEL,
    "explanations_create": TEAM_ENGINEER + "; or a reviewer who reads the model",
    "explanations_estimate": TEAM_ENGINEER + "; or a reviewer who reads the model",
    "explanations_cancel": "whoever requested the report (while they may still request reports), or an admin",
    "rollouts_list": READS_MODEL,
    "rollouts_retrieve": READS_MODEL,
    "rollouts_analysis_list": READS_MODEL,
    "rollouts_create": TEAM_MAINTAINER,
    "rollouts_promote": TEAM_MAINTAINER,
    "rollouts_pause": TEAM_MAINTAINER,
    "rollouts_resume": TEAM_MAINTAINER,
    "rollouts_abort": TEAM_MAINTAINER,
    "teams_list": ANY_ROLE + "; managers and admins see every team",
    "teams_create": "an admin",
    "teams_retrieve": "a member of the team, a manager or an admin",
    "teams_members_list": "a member of the team, a manager or an admin",
    "teams_members_set": "a maintainer of the team, or an admin",
    "teams_members_destroy": "a maintainer of the team, or an admin",
}


def add_access_requirements(result, generator, request, public):
    """drf-spectacular postprocessing hook: each operation says who may call
    it, as `x-glassbox-access` and at the end of its description, next to
    the authentication schemes of its `security`."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            access = OPERATION_ACCESS.get(operation.get("operationId", ""))
            if access is None:
                continue
            operation["x-glassbox-access"] = access
            description = operation.get("description", "")
            operation["description"] = f"{description}\n\nWho may call it: {access}.".strip()
    return result
