"""The OpenAPI schema's error answers. Every API error is JSON with a
`detail` string (glassbox.api_errors), whichever view or layer raised it,
so every operation documents those bodies once, here, rather than each view
listing the same seven codes by hand."""

ERROR_COMPONENT = "ErrorDetail"

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every 4xx and 503 answer: a readable `detail`; validation errors add `errors` by field, "
    "a 503 adds the `request_id` to quote, and some refusals add their own context.",
    "properties": {
        "detail": {"type": "string"},
        "errors": {},
        "request_id": {"type": "string"},
    },
    "required": ["detail"],
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
