"""The official OpenAI Python SDK against the gateway: chat completions (plain, streamed
with usage, a tool call round trip), Responses (plain, streamed, a function call round
trip with previous_response_id, retrieve), embeddings (base64 as the SDK asks by
default, and floats) and the model list. Exits non-zero on any failure."""
import json
import math
import sys

from openai import OpenAI

base_url, api_key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
results = []


def check(name, fn):
    try:
        fn()
        results.append((name, None))
        print(f"ok   {name}")
    except Exception as e:  # report every failure, then fail the run
        results.append((name, e))
        print(f"FAIL {name}: {e!r}")


def plain():
    r = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Say hello to the SDK"}],
        temperature=0,
    )
    assert r.object == "chat.completion", r.object
    assert "Say hello to the SDK" in r.choices[0].message.content, r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0


def streamed():
    text, usage, finish = "", None, None
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Stream to the SDK"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert "Stream to the SDK" in text, text
    assert finish == "stop", finish
    assert usage is not None and usage.completion_tokens > 0


def tool_call():
    tools = [{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }]
    messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "-3C, snow"})
    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)
    assert second.choices[0].finish_reason == "stop"
    assert "-3C, snow" in second.choices[0].message.content


WEATHER = [{
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}]


def responses_plain():
    r = client.responses.create(
        model="gpt-4o-mini", instructions="Be brief.", input="Say hello to Responses"
    )
    assert r.object == "response" and r.status == "completed", (r.object, r.status)
    assert "Say hello to Responses" in r.output_text, r.output_text
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens > 0
    again = client.responses.retrieve(r.id)
    assert again.id == r.id and again.output_text == r.output_text


def responses_streamed():
    kinds = []
    with client.responses.stream(model="gpt-4o-mini", input="Stream to Responses") as stream:
        text = ""
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] == "response.completed", kinds
    assert "response.output_text.done" in kinds and "response.output_item.done" in kinds
    assert "Stream to Responses" in text, text
    assert final.output_text == text, (final.output_text, text)
    # The raw event stream, as create(stream=True) gives it.
    raw = [e.type for e in client.responses.create(model="gpt-4o-mini", input="x", stream=True)]
    assert raw == kinds[:2] + raw[2:] and raw[-1] == "response.completed", raw


def responses_function_call():
    first = client.responses.create(
        model="gpt-4o", input="What is the weather in Oslo?", tools=WEATHER
    )
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1, first.output
    assert calls[0].name == "get_weather"
    assert "city" in json.loads(calls[0].arguments)
    second = client.responses.create(
        model="gpt-4o",
        previous_response_id=first.id,
        tools=WEATHER,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "-3C, snow"}],
    )
    assert second.previous_response_id == first.id
    assert "-3C, snow" in second.output_text, second.output_text
    # Streamed function call: the arguments arrive as deltas.
    with client.responses.stream(
        model="gpt-4o", input="Weather in Bergen?", tools=WEATHER
    ) as stream:
        args = "".join(
            e.delta for e in stream if e.type == "response.function_call_arguments.delta"
        )
        final = stream.get_final_response()
    assert json.loads(args) == json.loads(final.output[0].arguments), (args, final.output)


def embeddings():
    r = client.embeddings.create(
        model="text-embedding-3-small", input=["a cat", "a dog"], dimensions=32
    )
    assert len(r.data) == 2 and [d.index for d in r.data] == [0, 1]
    for d in r.data:
        assert len(d.embedding) == 32
        assert abs(math.sqrt(sum(x * x for x in d.embedding)) - 1.0) < 1e-4
    floats = client.embeddings.create(
        model="text-embedding-3-small", input="a cat", dimensions=32, encoding_format="float"
    )
    assert all(abs(a - b) < 1e-6 for a, b in zip(floats.data[0].embedding, r.data[0].embedding))
    assert r.usage.prompt_tokens > 0


def models():
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids and "sandbox-1" in ids, ids
    assert client.models.retrieve("gpt-4o-mini").owned_by == "openai"


check("plain completion", plain)
check("streamed completion", streamed)
check("tool call", tool_call)
check("responses: plain and retrieve", responses_plain)
check("responses: streamed", responses_streamed)
check("responses: function call with previous_response_id", responses_function_call)
check("embeddings", embeddings)
check("models", models)
failed = sum(1 for _, e in results if e)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
