"""The `glassbox` command when things go wrong on the way: a server that is
down, slow or hidden behind a proxy's error page, a token file others can
read, a file that is not there. Each says so in one line and exits with its
documented code. The server here is a stand-in (tests/client/conftest.py):
the real API is exercised in test_engineer_journey.py."""

import json
import os
import re
import socket
import stat
import time

from tests.client.conftest import glassbox

NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n"
)
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def json_answer(status: int, body) -> tuple:
    return status, "application/json", json.dumps(body).encode()


def env_login(url: str, token: str = "gbx_test_token") -> dict:
    return {"GLASSBOX_URL": url, "GLASSBOX_TOKEN": token}


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_a_server_that_is_down_is_one_line_and_exit_7(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe is closed.
    result = glassbox("models", config=tmp_path / "config.json", env=env_login(f"http://127.0.0.1:{port}"))
    assert result.returncode == 7
    assert error_lines(result) == [
        f"glassbox: error: cannot reach http://127.0.0.1:{port}: connection refused "
        "(is the server running at this address?)"
    ]
    assert result.stdout == ""


def test_a_proxy_error_page_is_one_line_and_exit_7(tmp_path, fake):
    fake.routes[("GET", "/api/v1/models/")] = (502, "text/html", NGINX_502)
    result = glassbox("models", config=tmp_path / "config.json", env=env_login(fake.url))
    assert result.returncode == 7
    [line] = error_lines(result)
    assert "HTTP 502" in line and "an HTML page" in line and "(502 Bad Gateway)" in line
    assert "<html" not in result.stderr


def test_a_slow_server_times_out_in_one_line(tmp_path, fake):
    def slow(request):
        time.sleep(3)
        return json_answer(200, [])

    fake.routes[("GET", "/api/v1/models/")] = slow
    result = glassbox("--timeout", "0.5", "models", config=tmp_path / "config.json", env=env_login(fake.url))
    assert result.returncode == 7
    assert error_lines(result) == [
        f"glassbox: error: {fake.url} did not answer within 0.5 s (GET /api/v1/models/); it may be overloaded"
    ]


def test_the_servers_detail_and_code_are_printed_with_the_exit_code(tmp_path, fake):
    refusal = {"detail": "This token may only predict and send feedback.", "code": "token_scope"}
    fake.routes[("GET", "/api/v1/models/")] = json_answer(403, refusal)
    fake.routes[("GET", "/api/v1/models/nope/")] = json_answer(404, {"detail": "No model named 'nope'."})
    config = tmp_path / "config.json"

    refused = glassbox("models", config=config, env=env_login(fake.url))
    assert refused.returncode == 3
    assert error_lines(refused) == [
        "glassbox: error: This token may only predict and send feedback. [token_scope] (HTTP 403)"
    ]
    # Scripts read the same from standard output with --json.
    as_json = glassbox("models", "--json", config=config, env=env_login(fake.url))
    assert as_json.returncode == 3
    error = json.loads(as_json.stdout)["error"]
    assert (error["status"], error["code"], error["detail"], error["exit_code"]) == (
        403,
        "token_scope",
        refusal["detail"],
        3,
    )

    missing = glassbox("model", "show", "nope", config=config, env=env_login(fake.url))
    assert missing.returncode == 4
    assert error_lines(missing) == ["glassbox: error: No model named 'nope'. (HTTP 404)"]


def test_a_token_file_others_can_read_is_refused_with_the_fix(tmp_path, fake):
    fake.routes[("GET", "/api/v1/models/")] = json_answer(200, [])
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"url": fake.url, "token": "gbx_secret"}))
    config.chmod(0o644)

    refused = glassbox("models", config=config)
    assert refused.returncode == 2
    assert error_lines(refused) == [
        f"glassbox: error: {config} holds your API token but other users may read it (mode 0644); "
        f"fix it with: chmod 600 {config}"
    ]
    assert fake.requests == []  # the token was not used

    config.chmod(0o600)
    allowed = glassbox("models", config=config)
    assert allowed.returncode == 0, allowed.stderr
    assert fake.requests[0]["headers"]["Authorization"] == "Token gbx_secret"


def test_login_stores_the_url_and_token_for_the_owner_only_and_the_environment_overrides_them(tmp_path, fake):
    fake.routes[("GET", "/api/v1/models/")] = json_answer(200, [])
    config = tmp_path / "glassbox" / "config.json"
    # A leftover world-readable file is replaced, not reused.
    config.parent.mkdir()
    config.write_text("{}")
    config.chmod(0o644)

    result = glassbox("login", "--url", fake.url, "--token", "gbx_given", config=config)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    assert json.loads(config.read_text()) == {"url": fake.url, "token": "gbx_given"}
    # login checked the token before storing it
    assert fake.requests[-1]["headers"]["Authorization"] == "Token gbx_given"

    overridden = glassbox("models", config=config, env={"GLASSBOX_TOKEN": "gbx_from_env"})
    assert overridden.returncode == 0, overridden.stderr
    assert fake.requests[-1]["headers"]["Authorization"] == "Token gbx_from_env"


def test_a_rejected_token_is_not_stored(tmp_path, fake):
    fake.routes[("GET", "/api/v1/models/")] = json_answer(401, {"detail": "Invalid token.", "code": "token_invalid"})
    config = tmp_path / "config.json"
    result = glassbox("login", "--url", fake.url, "--token", "gbx_wrong", config=config)
    assert result.returncode == 3
    assert "Invalid token. [token_invalid] (HTTP 401)" in result.stderr
    assert not config.exists()


def test_uploading_a_missing_file_fails_before_anything_is_sent(tmp_path, fake):
    missing = tmp_path / "model.zip"
    result = glassbox(
        "upload",
        str(missing),
        "--model",
        "m",
        "--flavor",
        "transformers",
        config=tmp_path / "c",
        env=env_login(fake.url),
    )
    assert result.returncode == 2
    assert error_lines(result) == [f"glassbox: error: No such file: {missing}"]
    assert fake.requests == []


def test_an_unknown_flavor_is_refused_before_anything_is_sent(tmp_path, fake):
    artifact = tmp_path / "model.zip"
    artifact.write_bytes(b"PK")
    result = glassbox(
        "upload", str(artifact), "--model", "m", "--flavor", "pickle", config=tmp_path / "c", env=env_login(fake.url)
    )
    assert result.returncode == 2
    assert "invalid choice: 'pickle'" in result.stderr
    assert fake.requests == []


def test_an_upload_is_streamed_with_its_length_and_an_idempotency_key(tmp_path, fake):
    artifact = tmp_path / "模型.zip"
    content = os.urandom(3 * 1024 * 1024 + 17)
    artifact.write_bytes(content)
    version = {"model": "m", "version": 3, "status": "registered", "size": len(content), "sha256": "ab" * 32}
    fake.routes[("POST", "/api/v1/models/m/versions/")] = json_answer(201, version)

    result = glassbox(
        "upload", str(artifact), "--model", "m", "--flavor", "transformers", "--metrics", '{"accuracy": 0.9}',
        "--json", config=tmp_path / "c", env=env_login(fake.url),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == version
    assert "100%" in result.stderr.splitlines()[-1]

    [request] = fake.requests
    headers = request["headers"]
    assert int(headers["Content-Length"]) == len(request["body"])
    assert "Transfer-Encoding" not in headers
    assert UUID4.match(headers["Idempotency-Key"])
    boundary = headers["Content-Type"].split("boundary=")[1].encode()
    parts = request["body"].split(b"--" + boundary)
    fields = {}
    for part in parts[1:-1]:
        head, _, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head).group(1).decode()
        fields[name] = (head, value[:-2])  # the part ends with CRLF before the next boundary
    assert fields["flavor"][1] == b"transformers"
    assert json.loads(fields["metrics"][1]) == {"accuracy": 0.9}
    assert fields["artifact"][1] == content
    assert 'filename="模型.zip"'.encode() in fields["artifact"][0]


def test_lists_follow_next_links_on_the_configured_address(tmp_path, fake):
    """A server behind a proxy may build `next` links with its inner address;
    the client asks its own URL for the next page (the token stays there)."""

    def models(request):
        if "cursor=page2" in request["path"]:
            return json_answer(200, {"results": [{"name": "second"}], "next": None, "previous": "x"})
        page = {"results": [{"name": "first"}], "next": "http://10.0.0.7:8000/api/v1/models/?cursor=page2"}
        return json_answer(200, {**page, "previous": None})

    fake.routes[("GET", "/api/v1/models/")] = models
    result = glassbox("models", "--json", config=tmp_path / "c", env=env_login(fake.url))
    assert result.returncode == 0, result.stderr
    assert [model["name"] for model in json.loads(result.stdout)] == ["first", "second"]
    assert [request["path"] for request in fake.requests] == ["/api/v1/models/", "/api/v1/models/?cursor=page2"]


def test_waiting_for_a_report_rides_out_a_proxy_error_and_exits_6_when_it_fails(tmp_path, fake):
    """A restart behind the proxy (one 502 page) does not end the wait; the
    report's failure does, with its reason and exit code 6."""
    answers = iter(
        [
            (502, "text/html", NGINX_502),
            json_answer(200, {"id": 5, "status": "running", "progress": 40, "method": "shap", "remaining_seconds": 3}),
            json_answer(200, {"id": 5, "status": "failed", "progress": 40, "method": "shap", "error": "worker lost"}),
        ]
    )
    fake.routes[("GET", "/api/v1/explanations/5/")] = lambda request: next(answers)
    result = glassbox("report", "wait", "5", "--poll", "0.1", config=tmp_path / "c", env=env_login(fake.url))
    assert result.returncode == 6
    assert "Report #5 [############" in result.stderr and "40%  running, ~3 s left" in result.stderr
    assert result.stderr.splitlines()[-1] == "glassbox: error: report #5 failed: worker lost"
    assert "error: worker lost" in result.stdout
    assert len(fake.requests) == 3


def test_a_retry_with_the_same_idempotency_key_sends_the_same_bytes(tmp_path, fake):
    artifact = tmp_path / "model.skops"
    artifact.write_bytes(os.urandom(4096))
    version = {"model": "m", "version": 1, "status": "registered", "size": 4096}
    fake.routes[("POST", "/api/v1/models/m/versions/")] = json_answer(201, version)
    upload = ("upload", str(artifact), "--model", "m", "--flavor", "sklearn", "--no-progress")
    for key in ("retry-me", "retry-me", "another"):
        result = glassbox(*upload, "--idempotency-key", key, config=tmp_path / "c", env=env_login(fake.url))
        assert result.returncode == 0, result.stderr
    first, retry, other = fake.requests
    assert first["headers"]["Idempotency-Key"] == retry["headers"]["Idempotency-Key"] == "retry-me"
    assert first["body"] == retry["body"]  # a server comparing bodies sees the same request
    assert other["body"] != first["body"]


def test_a_rejection_needs_its_comment_and_is_said_in_words(tmp_path, fake):
    def decide(request):
        body = json.loads(request["body"])
        if not body["comment"]:
            return json_answer(400, {"detail": "A rejection needs a comment.", "code": "comment_required"})
        recorded = {"id": 9, "reviewer": "rita", "decision": body["decision"], "comment": body["comment"]}
        return json_answer(201, {**recorded, "version_status": "rejected"})

    fake.routes[("POST", "/api/v1/models/m/versions/2/decisions/")] = decide
    command = ("decide", "m", "2", "reject")
    refused = glassbox(*command, config=tmp_path / "c", env=env_login(fake.url))
    assert refused.returncode == 1
    assert error_lines(refused) == ["glassbox: error: A rejection needs a comment. [comment_required] (HTTP 400)"]
    decided = glassbox(*command, "--comment", "热力图不合理", config=tmp_path / "c", env=env_login(fake.url))
    assert decided.returncode == 0, decided.stderr
    assert decided.stdout.strip() == "rita rejected m v2; the version is now rejected"
