"""The official MCP Python SDK both ways against a running digital-employee.

1. Client side of the platform: an MCP server built with the SDK (mcp_tool_server.py)
   is registered; employees whose (scripted sandbox) model calls mcp:<server>/<tool>
   complete tasks through it; the events show the calls; a tool error, invalid
   arguments, a slow tool past the timeout, an approval-gated tool, a deleted and an
   unreachable server each end as the README says.
2. Server side: the SDK's Client against /mcp with API keys: tools by scope, run_task to
   completion, an approval through MCP, a read key refused run_task, tenant B blind to
   tenant A's employees.

Usage: mcp_sdk_check.py API_BASE ADMIN_KEY VENDOR_BASE TOOL_SERVER_URL
Prints "mcp-sdk: N passed, 0 failed" at the end; any failed check raises.
"""

import asyncio
import json
import sys
import time
import urllib.request

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

API, ADMIN, VENDOR, TOOLS_URL = sys.argv[1:5]
passed = 0


def check(cond, what):
    global passed
    if not cond:
        raise AssertionError(what)
    passed += 1


def http(method, path, body=None, key=ADMIN, base=API):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "null")


def wait(pred, what, timeout=30):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def script(model, steps):
    status, _ = http("POST", "/__sandbox/setup", {"scripts": {model: steps}}, key="sk-sandbox-ci",
                     base=VENDOR)
    check(status in (200, 204), f"sandbox setup {status}")


def call_then_answer(model, tool, arguments):
    script(model, [{"tool_calls": [{"name": tool, "arguments": arguments}]},
                   {"content": f"{model} is done"}])


def employee(name, model, allowed, approval=()):
    status, body = http("POST", "/v1/employees", {
        "name": name, "role": "an employee using MCP tools", "model_policy": [f"openai/{model}"],
        "allowed_tools": list(allowed), "approval_tools": list(approval)})
    check(status == 201, f"employee {name}: {status} {body}")


def run(name):
    status, t = http("POST", "/v1/tasks", {"employee": name, "input": "go"})
    check(status == 202, f"submit {status} {t}")
    return t["id"]


def task(tid):
    return http("GET", f"/v1/tasks/{tid}")[1]


def ended(tid, statuses=("succeeded", "failed", "cancelled")):
    return wait(lambda: (lambda t: t if t["status"] in statuses else None)(task(tid)), tid)


def tool_result(tid):
    events = http("GET", f"/v1/tasks/{tid}/events")[1]["data"]
    results = [e["payload"] for e in events if e["kind"] == "tool_result"]
    check(len(results) == 1, f"one tool result in {events}")
    return results[0]


def platform_uses_an_sdk_server():
    status, s = http("POST", "/v1/mcp-servers", {"name": "py", "url": TOOLS_URL, "timeout_seconds": 3})
    check(status == 201, f"register {status} {s}")
    sid = s["id"]
    s = wait(lambda: (lambda v: v if v["status"] != "pending" else None)(
        http("GET", f"/v1/mcp-servers/{sid}")[1]), "first refresh")
    check(s["status"] == "ok", f"refresh: {s}")
    check(sorted(t["name"] for t in s["tools"]) == ["echo", "fail", "slow"], f"tools: {s['tools']}")
    echo = next(t for t in s["tools"] if t["name"] == "echo")
    check(echo["input_schema"]["properties"]["text"]["type"] == "string", f"schema: {echo}")

    call_then_answer("mcp-echo", "mcp:py/echo", {"text": "hello from a task"})
    employee("echoer", "mcp-echo", ["mcp:py/*"])
    t = ended(run("echoer"))
    check(t["status"] == "succeeded", f"echo task: {t}")
    r = tool_result(t["id"])
    check(r["tool"] == "mcp:py/echo" and r["outcome"] == "ok", f"echo result: {r}")
    check("echo: hello from a task" in json.dumps(r["content"]), f"echo content: {r}")

    call_then_answer("mcp-fail", "mcp:py/fail", {"reason": "testing"})
    employee("failer", "mcp-fail", ["mcp:py/fail"])
    t = ended(run("failer"))
    r = tool_result(t["id"])
    check(t["status"] == "succeeded" and r["outcome"] == "error", f"fail: {t} {r}")
    check("failed on purpose" in r["content"]["error"], f"fail content: {r}")

    call_then_answer("mcp-bad", "mcp:py/echo", {"wrong": 1})
    employee("bad-args", "mcp-bad", ["mcp:py/echo"])
    r = tool_result(ended(run("bad-args"))["id"])
    check(r["outcome"] == "invalid" and "text" in r["content"]["error"], f"invalid: {r}")

    call_then_answer("mcp-slow", "mcp:py/slow", {"seconds": 20})
    employee("sleeper", "mcp-slow", ["mcp:py/slow"])
    r = tool_result(ended(run("sleeper"))["id"])
    check(r["outcome"] == "error" and "did not answer within" in r["content"]["error"], f"slow: {r}")

    call_then_answer("mcp-gated", "mcp:py/echo", {"text": "approved call"})
    employee("gated-mcp", "mcp-gated", ["mcp:py/*"], ["mcp:py/echo"])
    tid = run("gated-mcp")
    t = ended(tid, ("waiting_approval", "succeeded", "failed"))
    check(t["status"] == "waiting_approval", f"gated: {t}")
    status, _ = http("POST", f"/v1/tasks/{tid}/approve", {})
    check(status == 202, f"approve {status}")
    t = ended(tid)
    r = tool_result(tid)
    check(t["status"] == "succeeded" and "approved call" in json.dumps(r["content"]), f"after approval: {r}")

    status, gone = http("POST", "/v1/mcp-servers",
                        {"name": "gone", "url": "http://127.0.0.1:9/mcp", "timeout_seconds": 2})
    check(status == 201, f"register gone {status}")
    g = wait(lambda: (lambda v: v if v["status"] != "pending" else None)(
        http("GET", f"/v1/mcp-servers/{gone['id']}")[1]), "gone refresh")
    check(g["status"] == "error" and g["last_error"], f"unreachable: {g}")
    call_then_answer("mcp-gone", "mcp:gone/echo", {"text": "x"})
    employee("lost", "mcp-gone", ["mcp:gone/*"])
    r = tool_result(ended(run("lost"))["id"])
    check(r["outcome"] == "error" and "gone" in r["content"]["error"], f"unreachable call: {r}")

    status, _ = http("DELETE", f"/v1/mcp-servers/{sid}")
    check(status == 204, f"delete {status}")
    call_then_answer("mcp-deleted", "mcp:py/echo", {"text": "x"})
    employee("orphan", "mcp-deleted", ["mcp:py/*"])
    r = tool_result(ended(run("orphan"))["id"])
    check(r["outcome"] == "error" and "no MCP server named 'py'" in r["content"]["error"], f"deleted: {r}")


def client(key):
    return Client(streamable_http_client(
        API + "/mcp", http_client=httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=60)))


def structured(result):
    check(not result.is_error, f"tool error: {result}")
    return result.structured_content


async def sdk_client_uses_our_endpoint():
    def key(body):
        status, k = http("POST", "/v1/keys", body)
        check(status == 201, f"key {status} {k}")
        return k["secret"]

    writer = key({"name": "mcp-writer", "scope": "write"})
    reader = key({"name": "mcp-reader", "scope": "read"})
    employee("plain", "sandbox-plain", [])
    status, _ = http("POST", "/v1/employees", {
        "name": "approver", "role": "r", "allowed_tools": ["calculator"],
        "approval_tools": ["calculator"]})
    check(status == 201, "approver employee")

    async with client(writer) as c:
        names = sorted(t.name for t in (await c.list_tools()).tools)
        check("run_task" in names and "approve_task" in names, f"write tools: {names}")
        done = structured(await c.call_tool(
            "run_task", {"employee": "plain", "input": "Say hello", "wait_seconds": 30}))
        check(done["status"] == "succeeded", f"run_task: {done}")
        paused = structured(await c.call_tool(
            "run_task", {"employee": "approver", "input": "What is 6 * 7?", "wait_seconds": 30}))
        check(paused["status"] == "waiting_approval", f"paused: {paused}")
        pending = structured(await c.call_tool("list_pending_approvals", {}))
        check(any(p["task"]["id"] == paused["id"] for p in pending["data"]), f"pending: {pending}")
        structured(await c.call_tool("approve_task", {"task_id": paused["id"]}))
        deadline = time.time() + 30
        while True:
            got = structured(await c.call_tool("get_task", {"task_id": paused["id"]}))
            if got["task"]["status"] == "succeeded":
                break
            check(time.time() < deadline, f"approved task never ended: {got}")
            await asyncio.sleep(0.2)
        check(any(e["kind"] == "approval" for e in got["recent_events"]), "approval event")

    async with client(reader) as c:
        names = sorted(t.name for t in (await c.list_tools()).tools)
        check(names == ["get_task", "list_employees", "list_pending_approvals"], f"read tools: {names}")
        try:
            r = await c.call_tool("run_task", {"employee": "plain", "input": "x"})
            refused = r.is_error and "write" in json.dumps(r.model_dump(mode="json"))
        except Exception as e:  # the SDK raises the JSON-RPC error
            refused = "write" in str(e)
        check(refused, "a read key must not run a task")

    status, tb = http("POST", "/v1/tenants", {"name": "mcp-tenant-b"})
    check(status == 201, f"tenant b {status}")
    other = key({"name": "b", "scope": "write", "tenant_id": tb["id"]})
    async with client(other) as c:
        listed = structured(await c.call_tool("list_employees", {}))
        check(listed["data"] == [], f"tenant B sees: {listed}")


platform_uses_an_sdk_server()
asyncio.run(sdk_client_uses_our_endpoint())
print(f"mcp-sdk: {passed} passed, 0 failed")
