"""The official Anthropic Python SDK against the gateway's /v1/messages, backed by the
vendor MODEL names: a plain message (key and bearer auth), messages.stream, a tool use
round trip (plain and streamed), stop sequences, count_tokens, the error shape and the
model list. Usage: anthropic_sdk_check.py BASE_URL KEY MODEL NAMES_STOP_SEQUENCE(0|1).
Exits non-zero on any failure."""
import sys

import anthropic

base_url, api_key, model, names_stop = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
results = []

CALC = [{
    "name": "calculator",
    "description": "Evaluates arithmetic",
    "input_schema": {
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
}]


def check(name, fn):
    try:
        fn()
        results.append((name, None))
        print(f"ok   {name} [{model}]")
    except Exception as e:  # report every failure, then fail the run
        results.append((name, e))
        print(f"FAIL {name} [{model}]: {e!r}")


def plain():
    m = client.messages.create(
        model=model,
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello to Claude clients"}],
    )
    assert m.type == "message" and m.role == "assistant"
    assert m.stop_reason == "end_turn", m.stop_reason
    assert "Say hello to Claude clients" in m.content[0].text, m.content
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0
    bearer = anthropic.Anthropic(base_url=base_url, auth_token=api_key, api_key=None, max_retries=0)
    m2 = bearer.messages.create(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "bearer"}]
    )
    assert m2.content[0].type == "text"


def streamed():
    with client.messages.stream(
        model=model, max_tokens=200, messages=[{"role": "user", "content": "Stream to Claude clients"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "Stream to Claude clients" in text, text
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def tool_use():
    messages = [{"role": "user", "content": "What is 6 * 7? Use the calculator."}]
    first = client.messages.create(
        model=model, max_tokens=200, messages=messages, tools=CALC, tool_choice={"type": "any"}
    )
    assert first.stop_reason == "tool_use", first.stop_reason
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "calculator" and use.input["expression"] == "6 * 7", use.input
    messages.append({"role": "assistant", "content": first.content})
    messages.append({
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "42"}],
    })
    second = client.messages.create(model=model, max_tokens=200, messages=messages, tools=CALC)
    assert second.stop_reason == "end_turn"
    assert "42" in second.content[0].text, second.content


def tool_use_streamed():
    with client.messages.stream(
        model=model,
        max_tokens=200,
        messages=[{"role": "user", "content": "What is 2 + 3? Use the calculator."}],
        tools=CALC,
        tool_choice={"type": "tool", "name": "calculator"},
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.input == {"expression": "2 + 3"}, use.input
    assert final.stop_reason == "tool_use"
    assert "input_json" in kinds and kinds[-1] == "message_stop", kinds


def stop_sequences():
    m = client.messages.create(
        model=model,
        max_tokens=200,
        stop_sequences=["STOP"],
        messages=[{"role": "user", "content": "say this then STOP and more"}],
    )
    assert m.content[0].text.endswith("say this then "), m.content[0].text
    if names_stop:
        assert m.stop_reason == "stop_sequence" and m.stop_sequence == "STOP", m
    else:
        assert m.stop_reason == "end_turn", m.stop_reason


def count_tokens():
    short = client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "hi"}])
    long = client.messages.count_tokens(
        model=model, messages=[{"role": "user", "content": "hello " * 400}], tools=CALC
    )
    assert 0 < short.input_tokens < long.input_tokens, (short, long)


def errors():
    try:
        client.messages.create(model=model, max_tokens=0, messages=[{"role": "user", "content": "x"}])
    except anthropic.BadRequestError as e:
        assert e.body["type"] == "error", e.body
        assert e.body["error"]["type"] == "invalid_request_error", e.body
    else:
        raise AssertionError("max_tokens 0 was accepted")
    bad = anthropic.Anthropic(base_url=base_url, api_key="not-a-key", max_retries=0)
    try:
        bad.messages.create(model=model, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    except anthropic.AuthenticationError as e:
        assert e.body["error"]["type"] == "authentication_error", e.body
    else:
        raise AssertionError("a bad key was accepted")


def models():
    ids = [m.id for m in client.models.list()]
    assert "sandbox-1" in ids, ids


check("plain message", plain)
check("messages.stream", streamed)
check("tool use round trip", tool_use)
check("tool use streamed", tool_use_streamed)
check("stop sequences", stop_sequences)
check("count_tokens", count_tokens)
check("errors", errors)
check("models", models)
failed = sum(1 for _, e in results if e)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
