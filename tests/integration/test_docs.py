"""The API documentation is the API: docs/openapi.json and docs/API.md are
checked against the code and the running server, so they cannot go stale.

- GET /v1/openapi.json serves docs/openapi.json byte for byte, and the
  document is valid OpenAPI 3.1 (tests/docs/validate.js: swagger-parser plus
  strict JSON Schema checks; `npm ci` installs it once into tests/docs).
- Router <-> document: every route of `srv_routes[]` (server/routes.c) is
  documented with its query parameters and auth, and nothing else is; the
  live server answers 405 for every undocumented method of a documented path
  and 404 for undocumented paths.
- Every documented response (operation x status) is produced for real and
  validates against its schema, with every field documented (objects are
  checked as if they had `additionalProperties: false`). Only 500 and 503
  are not provoked (they need a bug, a full disk or a draining server).
- Every curl example in docs/API.md runs (see "How to read the examples"
  there), answers the status written under it, and its reply validates
  against the document; every JSON sample in API.md matches a schema.
"""

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest
import requests

from conftest import (REPO_ROOT, REQUEST_TIMEOUT, SCALE, Server, finish_server, scaled, wait_for)

DOC_FILE = REPO_ROOT / "docs" / "openapi.json"
API_MD = REPO_ROOT / "docs" / "API.md"
ROUTES_C = REPO_ROOT / "server" / "routes.c"
APIERR_C = REPO_ROOT / "common" / "apierr.c"
VERSION_H = REPO_ROOT / "common" / "version.h"
TOOLS = REPO_ROOT / "tests" / "docs"

METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
# Methods probed for 405 (HEAD is served wherever GET is; TRACE is left to libmicrohttpd).
PROBE_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
TOKEN = "docs-test-token"
SOME_ID = "01M7Y9B187D9P0KKXS4XTW3P67"  # well-formed, never created
# Statuses no probe provokes, and why.
UNPROBED = {"500": "needs a bug or running out of memory",
            "503": "needs a server that is starting or draining, or an unwritable database"}


# --------------------------------------------------------------------------
# the document


@pytest.fixture(scope="module")
def doc():
    with open(DOC_FILE, encoding="utf-8") as f:
        return json.load(f)


def resolve(doc, node):
    """Follows a local $ref (#/a/b) once, and again while the target is a ref."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local $refs are used: {ref}"
        target = doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def schema_of(doc, schema, strict=True):
    """The schema with every $ref inlined. With `strict`, every object schema
    that lists `properties` and says nothing about others gets
    `additionalProperties: false`, so a field the server sends that the
    document does not name is an error. allOf branches (overlays that narrow
    a referenced schema) are left as they are; what they reference is strict."""
    if isinstance(schema, list):
        return [schema_of(doc, s, strict) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        target = schema_of(doc, resolve(doc, {"$ref": schema["$ref"]}), True)
        return {"allOf": [target], **schema_of(doc, rest, strict)} if rest else target
    out = {}
    for k, v in schema.items():
        if k in ("properties", "patternProperties", "$defs"):
            out[k] = {name: schema_of(doc, s, strict) for name, s in v.items()}
        elif k == "allOf":
            out[k] = [schema_of(doc, s, False) for s in v]
        elif k in ("items", "additionalProperties", "not", "anyOf", "oneOf", "if", "then", "else", "contains",
                   "prefixItems"):
            out[k] = schema_of(doc, v, strict)
        else:
            out[k] = v  # examples, enum, const, default: data, not schemas
    if strict and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def operations(doc):
    """{(METHOD, path): operation}, each with its parameters merged from the path item."""
    ops = {}
    for path, item in doc["paths"].items():
        for m in METHODS:
            if m in item:
                op = dict(item[m])
                op["parameters"] = [resolve(doc, p) for p in item.get("parameters", []) + op.get("parameters", [])]
                op["security"] = op.get("security", doc.get("security", []))
                ops[(m.upper(), path)] = op
    return ops


def template_regex(path):
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")


def match_path(doc, url_path):
    for path in doc["paths"]:
        if template_regex(path).match(url_path):
            return path
    return None


# --------------------------------------------------------------------------
# JSON Schema validation: python3-jsonschema when installed, else a small
# checker for exactly the keywords the document uses (it refuses any other).

try:
    import jsonschema
except ImportError:  # pragma: no cover - depends on the machine
    jsonschema = None

_IGNORED = {"description", "title", "examples", "default", "format", "deprecated", "readOnly", "writeOnly",
            "$schema", "$id", "$comment"}


def _type_ok(t, v):
    return {
        "null": v is None,
        "boolean": isinstance(v, bool),
        "object": isinstance(v, dict),
        "array": isinstance(v, list),
        "string": isinstance(v, str),
        "number": isinstance(v, (int, float)) and not isinstance(v, bool),
        "integer": (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    }[t]


def _mini_errors(s, v, where="$"):
    errs = []
    if s is True or s == {}:
        return errs
    if s is False:
        return [f"{where}: no value is allowed here"]
    for k in s:
        if k not in _IGNORED and k not in {
                "type", "enum", "const", "properties", "required", "additionalProperties", "items", "minItems",
                "maxItems", "uniqueItems", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                "minLength", "maxLength", "pattern", "anyOf", "allOf", "oneOf"}:
            raise AssertionError(f"the fallback schema checker does not know {k!r}: install python3-jsonschema")
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_type_ok(t, v) for t in types):
            return [f"{where}: {v!r:.80} is not of type {s['type']}"]
    if "enum" in s and v not in s["enum"]:
        errs.append(f"{where}: {v!r:.80} is not one of {s['enum']}")
    if "const" in s and v != s["const"]:
        errs.append(f"{where}: {v!r:.80} is not {s['const']!r}")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in s and v < s["minimum"]:
            errs.append(f"{where}: {v} < minimum {s['minimum']}")
        if "maximum" in s and v > s["maximum"]:
            errs.append(f"{where}: {v} > maximum {s['maximum']}")
        if "exclusiveMinimum" in s and v <= s["exclusiveMinimum"]:
            errs.append(f"{where}: {v} <= exclusiveMinimum {s['exclusiveMinimum']}")
        if "exclusiveMaximum" in s and v >= s["exclusiveMaximum"]:
            errs.append(f"{where}: {v} >= exclusiveMaximum {s['exclusiveMaximum']}")
    if isinstance(v, str):
        if "minLength" in s and len(v) < s["minLength"]:
            errs.append(f"{where}: shorter than {s['minLength']}")
        if "maxLength" in s and len(v) > s["maxLength"]:
            errs.append(f"{where}: longer than {s['maxLength']}")
        if "pattern" in s and not re.search(s["pattern"], v):
            errs.append(f"{where}: {v!r:.80} does not match {s['pattern']}")
    if isinstance(v, list):
        if "minItems" in s and len(v) < s["minItems"]:
            errs.append(f"{where}: fewer than {s['minItems']} items")
        if "maxItems" in s and len(v) > s["maxItems"]:
            errs.append(f"{where}: more than {s['maxItems']} items")
        if s.get("uniqueItems") and len({json.dumps(x, sort_keys=True) for x in v}) != len(v):
            errs.append(f"{where}: items are not unique")
        if "items" in s:
            for i, x in enumerate(v):
                errs += _mini_errors(s["items"], x, f"{where}[{i}]")
    if isinstance(v, dict):
        props = s.get("properties", {})
        for name in s.get("required", []):
            if name not in v:
                errs.append(f"{where}: {name!r} is a required property")
        for name, x in v.items():
            if name in props:
                errs += _mini_errors(props[name], x, f"{where}.{name}")
            elif "additionalProperties" in s:
                errs += _mini_errors(s["additionalProperties"], x, f"{where}.{name}")
    for sub in s.get("allOf", []):
        errs += _mini_errors(sub, v, where)
    if "anyOf" in s and not any(not _mini_errors(sub, v, where) for sub in s["anyOf"]):
        errs.append(f"{where}: {v!r:.80} matches none of anyOf")
    if "oneOf" in s and sum(not _mini_errors(sub, v, where) for sub in s["oneOf"]) != 1:
        errs.append(f"{where}: {v!r:.80} does not match exactly one of oneOf")
    return errs


def schema_errors(schema, value):
    """Error messages (empty when value is valid). `schema` has no $refs."""
    if jsonschema is not None:
        v = jsonschema.Draft202012Validator(schema)
        return [f"${''.join(f'[{p!r}]' for p in e.absolute_path)}: {e.message}" for e in v.iter_errors(value)]
    return _mini_errors(schema, value)


def test_schema_checker_is_strict(doc):
    """A field the document does not name fails, whichever checker runs."""
    job_schema = schema_of(doc, {"$ref": "#/components/schemas/Job"})
    job = copy.deepcopy(doc["components"]["schemas"]["Job"]["examples"][0])
    assert schema_errors(job_schema, job) == []
    job["surprise"] = 1
    assert schema_errors(job_schema, job), "an undocumented field must fail"
    job.pop("surprise")
    job["worker"]["extra"] = True
    assert schema_errors(job_schema, job), "an undocumented nested field must fail"
    job["worker"] = None
    job["status"] = "lost"
    assert schema_errors(job_schema, job), "a status outside the enum must fail"
    err_schema = schema_of(doc, doc["components"]["responses"]["NotFound"]["content"]["application/json"]["schema"])
    assert schema_errors(err_schema, {"error": {"code": "not_found", "message": "m", "field": None}}) == []
    assert schema_errors(err_schema, {"error": {"code": "conflict", "message": "m", "field": None}})


# --------------------------------------------------------------------------
# checking one HTTP reply against the document


def media_type(content_type):
    return (content_type or "").split(";")[0].strip().lower()


def response_problems(doc, method, url_path, status, headers, body):
    """What is wrong with a reply according to the document: [] when it
    matches the documented response for that operation and status."""
    what = f"{method} {url_path} -> {status}"
    path = match_path(doc, url_path)
    if path is None:
        return [f"{what}: the path is not documented"]
    op = operations(doc).get((method, path))
    if op is None:
        return [f"{what}: {method} is not documented for {path}"]
    resp = op["responses"].get(str(status))
    if resp is None:
        return [f"{what}: status {status} is not documented for {method} {path} "
                f"(documented: {sorted(op['responses'])})"]
    return reply_problems(doc, what, resolve(doc, resp), headers, body)


def reply_problems(doc, what, resp, headers, body):
    problems = []
    lower = {k.lower(): v for k, v in headers.items()}
    for name, h in (resp.get("headers") or {}).items():
        h = resolve(doc, h)
        value = lower.get(name.lower())
        if value is None:
            if h.get("required"):
                problems.append(f"{what}: the documented header {name} is missing")
            continue
        problems += [f"{what}: header {name}: {e}" for e in schema_errors(schema_of(doc, h["schema"]), value)]
    content = resp.get("content")
    if not content:
        if body:
            problems.append(f"{what}: the document says no body, got {body[:200]!r}")
        return problems
    ctype = media_type(lower.get("content-type"))
    if ctype not in content:
        return problems + [f"{what}: Content-Type {ctype!r} is not documented ({sorted(content)})"]
    schema = schema_of(doc, content[ctype]["schema"])
    if ctype == "application/json":
        try:
            value = json.loads(body)
        except ValueError:
            return problems + [f"{what}: the body is not JSON: {body[:200]!r}"]
    else:
        value = body.decode("utf-8")
    problems += [f"{what}: {e}" for e in schema_errors(schema, value)]
    return problems


def check_reply(doc, r, method=None, path=None):
    """Asserts that a requests.Response matches the document."""
    method = method or r.request.method
    path = path or urlsplit(r.url).path
    problems = response_problems(doc, method, path, r.status_code, r.headers, r.content)
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------
# servers


def _start(tmp_path_factory, name, **kw):
    return Server(tmp_path_factory.mktemp(name), **kw).start()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """plain: default flags plus --allow-exec; token: with a token;
    tiny: one thread and max_queued 1, to fill a queue."""
    started = {}
    try:
        started["plain"] = _start(tmp_path_factory, "docs-plain", args=["--allow-exec"])
        started["token"] = _start(tmp_path_factory, "docs-token", token=TOKEN)
        started["tiny"] = _start(tmp_path_factory, "docs-tiny", args=["--executors", "t=thread:1", "--max-queued", "1"])
        yield started
    finally:
        problems = []
        for srv in started.values():
            try:
                finish_server(srv)
            except BaseException as e:  # noqa: BLE001 - report every server
                problems.append(str(e))
        if problems:
            pytest.fail("\n".join(problems))


@pytest.fixture(scope="module")
def plain(servers):
    return servers["plain"]


def http(srv, method, path, token=None, **kw):
    headers = dict(kw.pop("headers", {}) or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    kw.setdefault("timeout", REQUEST_TIMEOUT)
    return requests.request(method, srv.url(path), headers=headers, **kw)


# --------------------------------------------------------------------------
# the served document, and the validator


def test_served_document_is_docs_openapi_json(plain, doc):
    r = http(plain, "GET", "/v1/openapi.json")
    assert r.status_code == 200, r.text[:300]
    assert media_type(r.headers.get("Content-Type")) == "application/json"
    assert r.content == DOC_FILE.read_bytes(), (
        "GET /v1/openapi.json differs from docs/openapi.json: rebuild (make build/jobd) after editing the document")
    assert r.json() == doc
    head = http(plain, "HEAD", "/v1/openapi.json")
    assert head.status_code == 200 and head.content == b""


@pytest.fixture(scope="module")
def validator():
    """`node tests/docs/validate.js`, after `npm ci` if node_modules is absent."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed to validate docs/openapi.json: `make deps-test` installs them")
    if not (TOOLS / "node_modules" / "@apidevtools" / "swagger-parser").is_dir():
        r = subprocess.run([npm, "ci", "--prefix", str(TOOLS), "--no-audit", "--no-fund"], capture_output=True,
                           text=True, timeout=600, cwd=TOOLS)
        assert r.returncode == 0, f"npm ci --prefix tests/docs failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"

    def run(path):
        return subprocess.run([node, str(TOOLS / "validate.js"), str(path)], capture_output=True, text=True,
                              timeout=120)
    return run


def test_served_document_is_valid_openapi_3_1(plain, validator, tmp_path):
    served = tmp_path / "served-openapi.json"
    served.write_bytes(http(plain, "GET", "/v1/openapi.json").content)
    r = validator(served)
    assert r.returncode == 0 and r.stdout.startswith("valid:"), f"validate.js:\n{r.stdout}\n{r.stderr}"


def test_validator_refuses_a_broken_document(doc, validator, tmp_path):
    """The validator is not a rubber stamp: a misspelt keyword, an undeclared
    path parameter and a bad example each fail."""
    breakages = {
        "typo": lambda d: d["components"]["schemas"]["Job"]["properties"]["attempt"].update(minimun=0),
        "path parameter": lambda d: d["paths"]["/v1/jobs/{id}"].pop("parameters"),
        "example": lambda d: d["components"]["schemas"]["Job"]["examples"][0].update(status="done"),
    }
    for name, breakage in breakages.items():
        broken = copy.deepcopy(doc)
        breakage(broken)
        f = tmp_path / f"broken-{name.replace(' ', '-')}.json"
        f.write_text(json.dumps(broken))
        r = validator(f)
        assert r.returncode != 0, f"validate.js accepted a document with a broken {name}: {r.stdout}"


# --------------------------------------------------------------------------
# router <-> document


def parse_routes():
    """srv_routes[] of server/routes.c: [(METHOD, pattern, allowed query params, auth)]."""
    src = ROUTES_C.read_text()
    arrays = {m.group(1): re.findall(r'"([^"]+)"', m.group(2))
              for m in re.finditer(r"static const char \*const (\w+)\[\]\s*=\s*\{([^}]*)\};", src)}
    table = re.search(r"const struct srv_route srv_routes\[\]\s*=\s*\{(.*?)\n\};", src, re.S)
    assert table, "srv_routes[] not found in server/routes.c"
    body = re.sub(r"/\*.*?\*/|//[^\n]*", "", table.group(1), flags=re.S)
    entries = re.findall(r'\{\s*"([A-Z]+)"\s*,\s*"([^"]+)"\s*,\s*(\w+)\s*,\s*(\w+)\s*,\s*(true|false)\s*\}', body)
    assert len(entries) == len(re.findall(r"^\s*\{", body, re.M)), (
        f"could not parse every entry of srv_routes[]:\n{body}")
    routes = []
    for method, pattern, _handler, query, auth in entries:
        assert query == "NULL" or query in arrays, f"query list {query} not found in server/routes.c"
        routes.append((method, pattern, set(arrays.get(query, [])), auth == "true"))
    return routes


def test_every_route_is_documented_and_every_documented_route_is_served(doc):
    routes = parse_routes()
    served = {(m, p) for m, p, _, _ in routes}
    documented = set(operations(doc))
    assert len(served) == len(routes), "srv_routes[] has a duplicate (method, path)"
    assert served - documented == set(), f"served but not in docs/openapi.json: {sorted(served - documented)}"
    assert documented - served == set(), f"in docs/openapi.json but not served: {sorted(documented - served)}"


def test_query_parameters_and_auth_match_the_route_table(doc):
    ops = operations(doc)
    for method, path, query, auth in parse_routes():
        op = ops[(method, path)]
        documented = {p["name"] for p in op["parameters"] if p["in"] == "query"}
        assert documented == query, (f"{method} {path}: documented query parameters {sorted(documented)}, "
                                     f"the route allows {sorted(query)}")
        path_params = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        assert path_params == set(re.findall(r"\{(\w+)\}", path)), f"{method} {path}: path parameters {path_params}"
        secured = any(req for req in op["security"])  # [] or [{}] means open
        assert secured == auth, (f"{method} {path}: the route {'needs' if auth else 'does not need'} the token, "
                                 f"but the document says security {op['security']}")
        if secured:
            assert all("bearerAuth" in req for req in op["security"]), op["security"]
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"


def test_error_codes_and_version_match_the_code(doc):
    codes = re.findall(r'case API_\w+: return "(\w+)";', APIERR_C.read_text())
    codes = [c for c in codes if c != "ok"]
    assert len(codes) >= 11, codes
    err = doc["components"]["schemas"]["Error"]["properties"]["error"]
    assert err["properties"]["code"]["enum"] == codes, "the Error schema's code enum differs from common/apierr.c"
    version = re.search(r'#define JOBD_VERSION "([^"]+)"', VERSION_H.read_text()).group(1)
    assert doc["info"]["version"] == version, f"info.version should be jobd's version {version}"
    # Each error response narrows `code` to codes of its status only.
    status_of = {"bad_json": "400", "invalid_argument": "400", "unauthorized": "401", "not_found": "404",
                 "method_not_allowed": "405", "conflict": "409", "payload_too_large": "413",
                 "unsupported_media_type": "415", "queue_full": "429", "internal": "500", "unavailable": "503"}
    assert set(status_of) == set(codes)
    for (method, path), op in operations(doc).items():
        for status, resp in op["responses"].items():
            if status.startswith(("4", "5")):
                schema = schema_of(doc, resolve(doc, resp)["content"]["application/json"]["schema"])
                for code, s in status_of.items():
                    ok = not schema_errors(schema, {"error": {"code": code, "message": "m", "field": None}})
                    assert ok == (s == status), f"{method} {path} {status}: code {code} {'fits' if ok else 'refused'}"


def concrete(path):
    return path.replace("{id}", SOME_ID)


# A valid value for each query parameter the document lists.
QUERY_VALUES = {"wait": "0", "status": "succeeded,failed", "task": "noop", "executor": "thread", "batch": SOME_ID,
                "limit": "2", "cursor": SOME_ID, "job": SOME_ID, "last_event_id": "0", "timeout": "0", "q": "noop"}
# Streams that would never end without them (GET /v1/events: ?timeout=0 ends it once caught up).
STREAM_END = {"/v1/events": {"timeout": "0"}}


def test_documented_query_parameters_are_accepted(plain, doc):
    """The live side of the route table check: each documented query
    parameter passes the server's unknown-parameter check."""
    for (method, path), op in operations(doc).items():
        for p in op["parameters"]:
            if p["in"] != "query":
                continue
            assert p["name"] in QUERY_VALUES, f"add a value for the new query parameter {p['name']!r} to QUERY_VALUES"
            body = {"json": {"task": "noop"}} if (method, path) == ("POST", "/v1/jobs") else {}
            params = {**STREAM_END.get(path, {}), p["name"]: QUERY_VALUES[p["name"]]}
            r = http(plain, method, concrete(path), params=params, **body)
            assert r.status_code != 400, f"{method} {path}?{p['name']}=...: {r.status_code} {r.text[:200]!r}"
            check_reply(doc, r, method, concrete(path))


def test_undocumented_methods_answer_405_with_allow(plain, doc):
    ops = operations(doc)
    for path in doc["paths"]:
        allowed = {m for (m, p) in ops if p == path}
        for method in PROBE_METHODS:
            if method in allowed:
                continue
            r = http(plain, method, concrete(path))
            assert r.status_code == 405, f"{method} {path}: expected 405, got {r.status_code} {r.text[:200]!r}"
            assert {m.strip() for m in r.headers.get("Allow", "").split(",")} == allowed, (
                f"{method} {path}: Allow {r.headers.get('Allow')!r}, documented {sorted(allowed)}")
            expected = resolve(doc, doc["components"]["responses"]["MethodNotAllowed"])
            problems = reply_problems(doc, f"{method} {path}", expected, r.headers, r.content)
            assert not problems, "\n".join(problems)
        if "GET" in allowed:
            r = http(plain, "HEAD", concrete(path))
            assert r.status_code != 405, f"HEAD {path} should be served like GET"


def test_undocumented_paths_answer_404(plain, doc):
    for path in ["/index.html", "/v1", "/v1/", "/v2/jobs", "/v1/jobs/", f"/v1/jobs/{SOME_ID}/bogus", "/v1/job",
                 "/v1/tasks/sleep", "/healthz/", "/metrics/x", "/v1/openapi.yaml"]:
        assert match_path(doc, path) is None, f"{path} is documented: pick another undocumented path"
        for method in ("GET", "POST"):
            r = http(plain, method, path)
            assert r.status_code == 404, f"{method} {path}: expected 404, got {r.status_code} {r.text[:200]!r}"
            expected = resolve(doc, doc["components"]["responses"]["NotFound"])
            problems = reply_problems(doc, f"{method} {path}", expected, r.headers, r.content)
            assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------
# every documented response, provoked for real


def submit(srv, spec, wait=None, expect=(200, 202)):
    r = http(srv, "POST", "/v1/jobs", params={"wait": wait} if wait is not None else None, json=spec,
             timeout=REQUEST_TIMEOUT + (wait or 0))
    assert r.status_code in expect, f"submit {spec}: {r.status_code} {r.text[:300]!r}"
    return r


def finished(srv, spec):
    """A job run to its end (long-polled)."""
    job = submit(srv, spec, wait=scaled(10)).json()
    if job["status"] not in ("succeeded", "failed", "cancelled"):
        job = http(srv, "GET", f"/v1/jobs/{job['id']}", params={"wait": scaled(10)},
                   timeout=REQUEST_TIMEOUT + scaled(10)).json()
    assert job["status"] in ("succeeded", "failed", "cancelled"), job
    return job


class Lab:
    """Jobs in known states on the three servers, made once per module."""

    def __init__(self, servers):
        self.s = servers
        p = servers["plain"]
        self.succeeded = finished(p, {"task": "noop"})["id"]
        self.failed = finished(p, {"task": "fail", "args": {"message": "for the docs"}})["id"]
        self.crunched = finished(p, {"task": "crunch", "args": {"iterations": 1000000}})["id"]
        self.running = submit(p, {"task": "sleep", "args": {"seconds": 120}}).json()["id"]
        # tiny: a failed job first, then a running sleep and a queued one: the queue is full.
        t = servers["tiny"]
        self.tiny_failed = finished(t, {"task": "fail"})["id"]
        # The first sleep must have started (left the queue) before the second
        # is submitted; otherwise the second is refused and the queue is left
        # empty once the first starts (an ASan CI run saw exactly that).
        first = submit(t, {"task": "sleep", "args": {"seconds": 120}}).json()["id"]
        self.tiny_sleeps = [first]
        wait_for(lambda: http(t, "GET", f"/v1/jobs/{first}").json()["status"] == "running", scaled(10),
                 message="the tiny server's first sleep to start")
        self.tiny_sleeps.append(submit(t, {"task": "sleep", "args": {"seconds": 120}}).json()["id"])
        r = submit(t, {"task": "sleep", "args": {"seconds": 120}}, expect=(429,))
        assert r.json()["error"]["code"] == "queue_full", r.text

    def close(self):
        for srv, ids in ((self.s["plain"], [self.running]), (self.s["tiny"], self.tiny_sleeps)):
            for job_id in ids:
                http(srv, "POST", f"/v1/jobs/{job_id}/cancel")


@pytest.fixture(scope="module")
def lab(servers):
    lab = Lab(servers)
    yield lab
    lab.close()


def specific_probes(lab, op_id):
    """{status: () -> (server, method, path, kwargs)} for the statuses an
    operation answers when things go right or a job is in the wrong state.
    Lazy: a probe that makes a job makes it only when it runs."""
    p, t = lab.s["plain"], lab.s["tiny"]

    def fresh_sleep():
        return submit(p, {"task": "sleep", "args": {"seconds": 60}}).json()["id"]

    def batch(key=None):
        r = http(p, "POST", "/v1/batches", json={"jobs": [{"task": "noop"}, {"task": "echo", "depends_on": [0]}]},
                 headers={"Idempotency-Key": key} if key else None)
        assert r.status_code in (200, 202), r.text
        return r.json()["id"]

    def batch_repeat():
        key = f"docs-batch-{os.getpid()}"
        batch(key)
        return (p, "POST", "/v1/batches", {"json": {"jobs": [{"task": "noop"}, {"task": "echo", "depends_on": [0]}]},
                                           "headers": {"Idempotency-Key": key}})

    return {
        "getHealthz": {"200": lambda: (p, "GET", "/healthz", {})},
        "getReadyz": {"200": lambda: (p, "GET", "/readyz", {})},
        "getOpenapi": {"200": lambda: (p, "GET", "/v1/openapi.json", {})},
        # The dashboard's files: 200, then 304 for the ETag the 200 gave.
        **{op: {"200": lambda path=path: (p, "GET", path, {}),
                "304": lambda path=path: (p, "GET", path,
                                          {"headers": {"If-None-Match": http(p, "GET", path).headers["ETag"]}})}
           for op, path in (("getDashboard", "/"), ("getDashboardScript", "/app.js"),
                            ("getDashboardStyles", "/app.css"))},
        "getMetrics": {"200": lambda: (p, "GET", "/metrics", {})},
        "listTasks": {"200": lambda: (p, "GET", "/v1/tasks", {})},
        "listExecutors": {"200": lambda: (p, "GET", "/v1/executors", {})},
        "getStats": {"200": lambda: (p, "GET", "/v1/stats", {})},
        "streamEvents": {
            "200": lambda: (p, "GET", "/v1/events", {"params": {"timeout": "0"}, "headers": {"Last-Event-ID": "0"}}),
            "400": lambda: (p, "GET", "/v1/events", {"params": {"job": "not-an-id"}}),
        },
        "submitJob": {
            "202": lambda: (p, "POST", "/v1/jobs", {"json": {
                "task": "sleep", "args": {"seconds": 0}, "priority": 3, "timeout": 5, "max_attempts": 2,
                "retry_backoff": 0.5, "idempotency_key": f"docs-{os.getpid()}"}}),
            "200": lambda: (p, "POST", "/v1/jobs", {"params": {"wait": scaled(10)},
                                                    "json": {"task": "square", "args": {"n": 3}}}),
            "400": lambda: (p, "POST", "/v1/jobs", {"json": {"task": "sleep", "args": {"seconds": -1}}}),
            "429": lambda: (t, "POST", "/v1/jobs", {"json": {"task": "noop"}}),
        },
        "listJobs": {
            "200": lambda: (p, "GET", "/v1/jobs", {"params": {"limit": 1, "status": "succeeded,failed"}}),
            "400": lambda: (p, "GET", "/v1/jobs", {"params": {"limit": 0}}),
        },
        "getJob": {
            "200": lambda: (p, "GET", f"/v1/jobs/{lab.crunched}", {}),
            "400": lambda: (p, "GET", f"/v1/jobs/{lab.crunched}", {"params": {"wait": -1}}),
            "404": lambda: (p, "GET", f"/v1/jobs/{SOME_ID}", {}),
        },
        "deleteJob": {
            "204": lambda: (p, "DELETE", f"/v1/jobs/{finished(p, {'task': 'noop'})['id']}", {}),
            "404": lambda: (p, "DELETE", "/v1/jobs/not-an-id", {}),
            "409": lambda: (p, "DELETE", f"/v1/jobs/{lab.running}", {}),
        },
        "cancelJob": {
            "200": lambda: (p, "POST", f"/v1/jobs/{fresh_sleep()}/cancel", {}),
            "404": lambda: (p, "POST", f"/v1/jobs/{SOME_ID}/cancel", {}),
            "409": lambda: (p, "POST", f"/v1/jobs/{lab.succeeded}/cancel", {}),
        },
        "waitJobs": {
            "200": lambda: (p, "POST", "/v1/wait", {"json": {"ids": [lab.succeeded, lab.failed, lab.running],
                                                             "return_when": "FIRST_EXCEPTION", "timeout": 5}}),
            "400": lambda: (p, "POST", "/v1/wait", {"json": {"ids": []}}),
            "404": lambda: (p, "POST", "/v1/wait", {"json": {"ids": [lab.succeeded, SOME_ID]}}),
        },
        "createBatch": {
            "202": lambda: (p, "POST", "/v1/batches", {"json": {
                "jobs": [{"task": "noop"}, {"task": "square", "args": {"n": 4}, "depends_on": [0],
                                            "concurrency_key": "docs", "concurrency_limit": 2}]}}),
            "200": batch_repeat,
            "400": lambda: (p, "POST", "/v1/batches", {"json": {"jobs": [{"task": "noop"}, {"task": "nope"}]}}),
            "429": lambda: (t, "POST", "/v1/batches", {"json": {"jobs": [{"task": "noop"}]}}),
        },
        "getBatch": {
            "200": lambda: (p, "GET", f"/v1/batches/{batch()}", {"params": {"wait": scaled(10)},
                                                                "timeout": REQUEST_TIMEOUT + scaled(10)}),
            "400": lambda: (p, "GET", f"/v1/batches/{batch()}", {"params": {"wait": -1}}),
            "404": lambda: (p, "GET", f"/v1/batches/{SOME_ID}", {}),
        },
        "retryJob": {
            "202": lambda: (p, "POST", f"/v1/jobs/{lab.failed}/retry", {}),
            "404": lambda: (p, "POST", f"/v1/jobs/{SOME_ID}/retry", {}),
            "409": lambda: (p, "POST", f"/v1/jobs/{lab.succeeded}/retry", {}),
            "429": lambda: (t, "POST", f"/v1/jobs/{lab.tiny_failed}/retry", {}),
        },
    }[op_id]


def generic_probe(lab, method, path, status):
    """The probes every operation of a kind shares."""
    p, tok = lab.s["plain"], lab.s["token"]
    url = concrete(path)
    if status == "400":
        return (p, method, url, {"params": {"bogus": "1"}})
    if status == "401":
        return (tok, method, url, {})
    if status == "413":
        return (p, method, url, {"data": b"x" * (1024 * 1024 + 1), "headers": {"Content-Type": "application/json"}})
    if status == "415":
        return (p, method, url, {"data": b"hello", "headers": {"Content-Type": "text/plain"}})
    return None


def _op_ids():
    with open(DOC_FILE, encoding="utf-8") as f:
        d = json.load(f)
    return [(m, p, op["operationId"]) for (m, p), op in operations(d).items()]


@pytest.mark.parametrize("method,path,op_id", _op_ids(), ids=[o[2] for o in _op_ids()])
def test_every_documented_response_happens_and_matches(doc, lab, method, path, op_id):
    op = operations(doc)[(method, path)]
    probes = specific_probes(lab, op_id)
    unprobed = []
    for status in sorted(op["responses"]):
        probe = probes[status]() if status in probes else generic_probe(lab, method, path, status)
        if probe is None:
            assert status in UNPROBED, f"{method} {path}: no probe provokes the documented {status}"
            unprobed.append(status)
            continue
        srv, m, url, kw = probe
        r = http(srv, m, url, **kw)
        assert r.status_code == int(status), (
            f"{m} {url} on the {next(k for k, v in lab.s.items() if v is srv)} server: expected {status}, "
            f"got {r.status_code} {r.text[:300]!r}")
        check_reply(doc, r, method, url.split("?")[0])
    for status in probes:
        assert status in op["responses"], f"{method} {path} answered {status}, which the document does not list"
    # Open routes stay open with a token configured.
    if not any(req for req in op["security"]):
        r = http(lab.s["token"], method, concrete(path))
        assert r.status_code != 401, f"{method} {path} is documented as needing no token, yet answers 401"


# --------------------------------------------------------------------------
# docs/API.md: the curl examples run, the JSON samples match


FENCE_RE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
ANNOTATION_RE = re.compile(r"^#\s*→\s*(\d{3})\b\s*(.*)$")


def api_md_blocks():
    """[(heading, language, text)] of the fenced blocks of docs/API.md."""
    text = API_MD.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE_RE.finditer(text):
        headings = re.findall(r"^#+ (.+)$", text[:m.start()], re.M)
        blocks.append((headings[-1] if headings else "", m.group(1), m.group(2)))
    return blocks


def parse_examples(block):
    """[(command, status, rest of the annotation)] of one sh block."""
    examples, current, lines = [], None, block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line:
            continue
        m = ANNOTATION_RE.match(line)
        if m:
            assert current is not None, f"an annotation with no command before it: {line!r}"
            examples.append((current, int(m.group(1)), m.group(2)))
            current = None
            continue
        if line.startswith("#"):
            continue
        assert current is None, f"a command without its `# → STATUS` line: {current!r}"
        cmd = line
        while cmd.endswith("\\") and i < len(lines):
            cmd = cmd[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        assert cmd.startswith("curl "), f"examples are curl commands: {cmd!r}"
        assert "localhost:8080" in cmd, f"examples talk to localhost:8080: {cmd!r}"
        words = shlex.split(cmd)
        for bad in ("-o", "-w", "-D", "-i", "--output", "--write-out", "--dump-header", "--include"):
            assert bad not in words, f"{bad} would clash with how the test runs the example: {cmd!r}"
        current = cmd
    assert current is None, f"a command without its `# → STATUS` line: {current!r}"
    return examples


def test_api_md_has_no_examples_outside_sh_blocks():
    text = FENCE_RE.sub("", API_MD.read_text(encoding="utf-8"))
    stray = [line for line in text.splitlines() if re.search(r"(^|\s)curl\s+-", line) and "`curl" not in line]
    assert not stray, f"curl examples belong in ```sh blocks (so the test runs them): {stray}"


WAIT_ARG_RE = re.compile(r"([?&]wait=)(\d+(?:\.\d+)?)(?=[&'\"\s]|$)")


def scale_waits(cmd):
    """The example with each `?wait=S` scaled like every other deadline here:
    as written on a release build, longer on the slow sanitizer builds, where
    a job the doc runs "to its end" within S seconds may take SCALE times as long."""
    return WAIT_ARG_RE.sub(lambda m: f"{m.group(1)}{float(m.group(2)) * SCALE:g}", cmd)


def run_example(cmd, srv, env, tmp_path, n):
    """Runs one example against srv; returns (status, method, path, headers, body)."""
    body_f, head_f = tmp_path / f"ex{n}.body", tmp_path / f"ex{n}.headers"
    real = scale_waits(cmd).replace("localhost:8080", f"127.0.0.1:{srv.port}")
    real += (f" -sS --max-time {int(60 * SCALE)} -o {shlex.quote(str(body_f))} -D {shlex.quote(str(head_f))}"
             " -w '%{http_code} %{method} %{url_effective}'")
    r = subprocess.run(["bash", "-c", real], capture_output=True, text=True, env=env, timeout=90 * SCALE)
    assert r.returncode == 0, f"{cmd}\nexit status {r.returncode}: {r.stderr}"
    status, method, url = r.stdout.split(" ", 2)
    headers = {}
    for line in head_f.read_text(errors="replace").splitlines()[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip()] = v.strip()
    return int(status), method, urlsplit(url).path, headers, body_f.read_bytes()


def test_api_md_examples_run_and_match_the_document(servers, doc, tmp_path):
    blocks = [(h, text) for h, lang, text in api_md_blocks() if lang == "sh"]
    assert blocks, "docs/API.md has no sh examples"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBD_")}
    env.update(TOKEN=TOKEN, JOB="", BATCH="")
    ops_seen, n = set(), 0
    for heading, text in blocks:
        srv = servers["token"] if "$TOKEN" in text else servers["plain"]
        for cmd, want, note in parse_examples(text):
            n += 1
            if "$JOB" in cmd:
                assert env["JOB"], f"[{heading}] {cmd}: $JOB is used before any POST /v1/jobs example created a job"
            status, method, path, headers, body = run_example(cmd, srv, env, tmp_path, n)
            where = f"[{heading}] {cmd}\n  (JOB={env['JOB']}) answered {status}: {body[:300]!r}"
            assert status == want, f"{where}\n  but the doc says {want}"
            value = json.loads(body) if body and media_type(headers.get("Content-Type")) == "application/json" else None
            if status >= 400:
                code = note.split()[0] if note.split() else ""
                assert code == value["error"]["code"], f"{where}\n  the doc says code {code!r}"
            m = re.search(r'"status": "(\w+)"', note)
            if m and isinstance(value, dict) and "task" in value:
                if (value["status"] != m.group(1) and SCALE > 1 and method == "POST" and path.endswith("/cancel")
                        and value["status"] in ("queued", "running")):
                    # The cancel reply waits 2 s (unscaled) for the job to stop,
                    # which a sanitizer build may need longer for: the job
                    # must still end as the doc says, before the next example.
                    value = http(srv, "GET", path[:-len("/cancel")], token=TOKEN if srv is servers["token"] else None,
                                 params={"wait": scaled(10)}, timeout=REQUEST_TIMEOUT + scaled(10)).json()
                    where += f"\n  (the reply showed the job still going; then it was {value['status']!r})"
                assert value["status"] == m.group(1), f"{where}\n  the doc says \"status\": {m.group(1)!r}"
            if match_path(doc, path) is not None and (method, match_path(doc, path)) in operations(doc):
                problems = response_problems(doc, method, path, status, headers, body)
                assert not problems, f"{where}\n" + "\n".join(problems)
                ops_seen.add((method, match_path(doc, path)))
            if method == "POST" and path == "/v1/jobs" and status in (200, 202):
                env["JOB"] = value["id"]
            if method == "POST" and path == "/v1/batches" and status in (200, 202):
                env["BATCH"] = value["id"]
    missing = set(operations(doc)) - ops_seen
    assert not missing, f"docs/API.md has no curl example for {sorted(missing)}"


def test_api_md_json_samples_match_a_schema(doc):
    names = ["Job", "JobList", "TaskList", "ExecutorList", "Stats", "Error", "JobSpec", "Health", "Ready"]
    schemas = {n: schema_of(doc, {"$ref": f"#/components/schemas/{n}"}) for n in names}
    samples = [(h, text) for h, lang, text in api_md_blocks() if lang == "json"]
    assert samples
    for heading, text in samples:
        value = json.loads(text)
        errors = {n: schema_errors(s, value) for n, s in schemas.items()}
        assert any(not e for e in errors.values()), (
            f"[{heading}] this JSON sample matches no schema of docs/openapi.json: {text}\n" +
            "\n".join(f"  {n}: {e[:3]}" for n, e in errors.items()))


def test_api_md_names_every_route_field_code_and_task(doc, plain):
    text = API_MD.read_text(encoding="utf-8")
    for method, path in operations(doc):
        heading = re.compile(r"^#+ .*`" + re.escape(method) + " " + re.escape(path) + r"[`\[?]", re.M)
        assert heading.search(text), f"docs/API.md has no heading for `{method} {path}`"
    schemas = doc["components"]["schemas"]
    for name in list(schemas["JobSpec"]["properties"]) + list(schemas["Job"]["properties"]):
        assert f"`{name}`" in text, f"docs/API.md does not mention the field `{name}`"
    for code in schemas["Error"]["properties"]["error"]["properties"]["code"]["enum"]:
        assert f"`{code}`" in text, f"docs/API.md does not mention the error code `{code}`"
    for task in http(plain, "GET", "/v1/tasks").json()["tasks"]:
        assert f"| `{task['name']}` |" in text, f"docs/API.md's table of built-in tasks lacks `{task['name']}`"
