"""`pixtral serve` against real clients: the `openai` package, curl, and raw HTTP for bad input.

Answers are checked against `pixtral run --temp 0` on the same messages (the independent path: the CLI's
single-stream session), so a batched, chunked or cached server answer must be the same text."""

import base64
import json
import signal
import struct
import subprocess
import threading
import time
import zlib

import httpx
import jsonschema
import openai
import pytest

from conftest import KEY, ROOT, Server, pixtral_run

RED_CIRCLE = ROOT / "examples" / "red-circle.png"
THREE_SQUARES = ROOT / "examples" / "three-squares.png"


def client(server, key="none"):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=60)


def data_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def image_part(path):
    return {"type": "image_url", "image_url": {"url": data_url(path)}}


def run_answer(*args) -> str:
    return pixtral_run("--temp", "0", *args).removesuffix("\n")


def assert_error(r: httpx.Response, status: int, *words: str):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] and err["message"] and (err["code"] is None or isinstance(err["code"], str))
    for w in words:
        assert w in err["message"], err["message"]


def still_serving(server):
    assert httpx.get(server.url + "/health").status_code == 200
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert r.status_code == 200, r.text


# ---- the API ----


def test_health_is_an_empty_200(server):
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200 and r.content == b""


def test_models(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["pixtral-demo"]
    assert client(server).models.retrieve("pixtral-demo").id == "pixtral-demo"
    with pytest.raises(openai.NotFoundError):
        client(server).models.retrieve("gpt-4")


def test_answer_equals_run(server):
    prompt = "What can you do?"
    r = client(server).chat.completions.create(
        model="pixtral-demo", messages=[{"role": "user", "content": prompt}], temperature=0
    )
    assert r.choices[0].message.content == run_answer("-p", prompt)
    assert r.choices[0].finish_reason == "stop"
    u = r.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert r.model_extra["timings"]["predicted_n"] == u.completion_tokens


def test_stream_equals_run(server):
    prompt = "Hello there"
    chunks = list(
        client(server).chat.completions.create(
            model="x",
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == run_answer("-p", prompt)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_curl_plain_and_streaming(server):
    body = json.dumps({"messages": [{"role": "user", "content": "What shape is this?"}], "temperature": 0})
    out = subprocess.run(
        ["curl", "-sS", "-f", server.url + "/v1/chat/completions", "-H", "Content-Type: application/json", "-d", body],
        capture_output=True, text=True, check=True,
    ).stdout
    want = run_answer("-p", "What shape is this?")
    assert json.loads(out)["choices"][0]["message"]["content"] == want
    body = json.dumps({"messages": [{"role": "user", "content": "What shape is this?"}], "temperature": 0, "stream": True})
    out = subprocess.run(
        ["curl", "-sS", "-N", "-f", server.url + "/v1/chat/completions", "-d", body],
        capture_output=True, text=True, check=True,
    ).stdout
    events = [line[len("data: "):] for line in out.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == want
    # without include_usage the counts ride on the last chunk (llama-server's way)
    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "stop" and last["usage"]["completion_tokens"] > 0
    assert last["timings"]["predicted_n"] == last["usage"]["completion_tokens"]


def test_image_data_url_equals_run(server):
    r = client(server).chat.completions.create(
        model="x",
        messages=[{"role": "user", "content": [image_part(RED_CIRCLE), {"type": "text", "text": "What colour is it?"}]}],
        temperature=0,
    )
    assert r.choices[0].message.content == run_answer("--image", str(RED_CIRCLE), "-p", "What colour is it?")


def test_two_images_in_one_message(server):
    content = [image_part(RED_CIRCLE), image_part(THREE_SQUARES), {"type": "text", "text": "How many squares?"}]
    r = client(server).chat.completions.create(model="x", messages=[{"role": "user", "content": content}], temperature=0)
    want = run_answer("--image", str(RED_CIRCLE), "--image", str(THREE_SQUARES), "-p", "How many squares?")
    assert r.choices[0].message.content == want
    assert r.usage.model_extra["images_encoded"] + r.usage.model_extra["images_cached"] == 2


def test_an_image_sent_again_is_not_encoded_again(server):
    msg = [{"role": "user", "content": [image_part(THREE_SQUARES), {"type": "text", "text": "What colour are they?"}]}]
    c = client(server)
    c.chat.completions.create(model="x", messages=msg, temperature=0, max_tokens=8)
    hits = server.metric("image_cache_hits_total")
    encoded = server.metric("images_encoded_total")
    r = c.chat.completions.create(model="x", messages=msg, temperature=0, max_tokens=8)
    usage = r.usage.model_dump()
    assert usage["images_cached"] == 1 and usage["images_encoded"] == 0
    assert r.model_extra["timings"]["image_encode_ms"] == 0
    assert server.metric("image_cache_hits_total") == hits + 1 and server.metric("images_encoded_total") == encoded
    # the whole prompt but its last token was in a slot's KV cache
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1


def test_clients_taking_turns_keep_their_slots(server):
    c = client(server)
    ask = lambda img: c.chat.completions.create(  # noqa: E731
        model="x", temperature=0, max_tokens=4,
        messages=[{"role": "user", "content": [image_part(img), {"type": "text", "text": "What shape is this?"}]}])
    ask(RED_CIRCLE), ask(THREE_SQUARES)
    for img in [RED_CIRCLE, THREE_SQUARES, RED_CIRCLE]:
        u = ask(img).usage
        # all but the last prompt token come from the slot that read this image before
        assert u.prompt_tokens_details.cached_tokens == u.prompt_tokens - 1, img


def test_file_url_inside_media_dir(server):
    url = "file://" + str(RED_CIRCLE)
    msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What shape is this?"}]}]
    r = client(server).chat.completions.create(model="x", messages=msg, temperature=0)
    assert r.choices[0].message.content == run_answer("--image", str(RED_CIRCLE), "-p", "What shape is this?")


def test_json_schema_output_parses_and_validates(server):
    schema = {
        "type": "object",
        "properties": {
            "shape": {"type": "string", "enum": ["circle", "square", "triangle"]},
            "count": {"type": "integer", "minimum": 0, "maximum": 9},
            "colour": {"type": "string", "maxLength": 12},
        },
        "required": ["shape", "count", "colour"],
        "additionalProperties": False,
    }
    r = client(server).chat.completions.create(
        model="x",
        messages=[{"role": "user", "content": [image_part(THREE_SQUARES), {"type": "text", "text": "Describe it."}]}],
        temperature=0,
        max_tokens=100,
        response_format={"type": "json_schema", "json_schema": {"name": "scene", "schema": schema, "strict": True}},
    )
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_json_object_output_parses(server):
    r = client(server).chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Hi"}], temperature=0, max_tokens=200,
        response_format={"type": "json_object"},
    )
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_a_complete_json_ends_the_answer_even_with_ignore_eos(server):
    r = post(server, chat_body(temperature=0, max_tokens=200, ignore_eos=True, response_format={"type": "json_object"}))
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and isinstance(json.loads(choice["message"]["content"]), dict)


def test_logprobs_consistent_with_the_sampled_tokens(server):
    r = client(server).chat.completions.create(
        model="x", messages=[{"role": "user", "content": "What shape is this?"}], temperature=0, logprobs=True, top_logprobs=3
    )
    entries = r.choices[0].logprobs.content
    # the EOS that ended the answer counts as a completion token but has no text, so no entry
    assert len(entries) == r.usage.completion_tokens - 1
    text = b"".join(bytes(e.bytes) for e in entries).decode()
    assert text == r.choices[0].message.content
    for e in entries:
        assert len(e.top_logprobs) == 3
        lps = [t.logprob for t in e.top_logprobs]
        assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
        # greedy: the sampled token is the likeliest
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == e.logprob
        assert sum(2.718281828459045 ** lp for lp in lps) <= 1.0 + 1e-5


def test_seeded_sampling_repeats(server):
    ask = lambda: client(server).chat.completions.create(  # noqa: E731
        model="x", messages=[{"role": "user", "content": "Tell me something"}], temperature=1.0, seed=42, max_tokens=20
    ).choices[0].message.content
    assert ask() == ask()


def test_stop_string(server):
    full = run_answer("-p", "What can you do?")
    cut = full[: len(full) // 2][-3:]
    r = client(server).chat.completions.create(
        model="x", messages=[{"role": "user", "content": "What can you do?"}], temperature=0, stop=[cut]
    )
    assert r.choices[0].message.content == full[: full.index(cut)] and r.choices[0].finish_reason == "stop"


def test_max_tokens_gives_length(server):
    r = client(server).chat.completions.create(
        model="x", messages=[{"role": "user", "content": "What can you do?"}], temperature=0, max_completion_tokens=3
    )
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


# ---- concurrency, disconnects, shutdown ----


def test_eight_concurrent_clients_get_their_lone_answers(server):
    prompts = [
        ("What shape is this?", RED_CIRCLE),
        ("How many squares?", THREE_SQUARES),
        ("What colour is it?", RED_CIRCLE),
        ("Hello", None),
        ("What can you do?", None),
        ("What colour are they?", THREE_SQUARES),
        ("Describe the image.", RED_CIRCLE),
        ("Who are you?", None),
    ]

    def messages(p, img):
        content = [image_part(img), {"type": "text", "text": p}] if img else p
        return [{"role": "user", "content": content}]

    def ask(p, img):
        r = client(server).chat.completions.create(model="x", messages=messages(p, img), temperature=0, max_tokens=64)
        return r.choices[0].message.content

    alone = [ask(p, img) for p, img in prompts]
    together = [None] * len(prompts)

    def worker(i):
        together[i] = ask(*prompts[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


def test_a_client_gone_mid_stream_frees_its_slot(server):
    cancelled = server.metric("requests_cancelled_total")
    body = {
        "messages": [{"role": "user", "content": "Count forever"}],
        "stream": True, "ignore_eos": True, "max_tokens": 6000, "temperature": 0,
    }
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()  # kept alive: closing this iterator closes the connection
        data = [ln for ln in (next(lines) for _ in range(10)) if ln.startswith("data: ")]
        assert len(data) == 5 and server.metric("slots_busy") >= 1
        tokens = server.metric("completion_tokens_total")
    # the connection is closed: the slot is freed within a step or two
    deadline = time.time() + 5
    while server.metric("slots_busy") != 0 or server.metric("requests_cancelled_total") != cancelled + 1:
        assert time.time() < deadline, "the slot was not freed"
        time.sleep(0.02)
    # it stopped there, far from its 6000 tokens
    assert server.metric("completion_tokens_total") < tokens + 1000
    still_serving(server)


def test_sigterm_drains_running_streams():
    s = Server()
    try:
        body = {
            "messages": [{"role": "user", "content": "Go on"}],
            "stream": True, "ignore_eos": True, "max_tokens": 1500, "temperature": 0,
        }
        lines = []
        with httpx.stream("POST", s.url + "/v1/chat/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                lines.append(line)
                if len(lines) == 3:
                    s.proc.send_signal(signal.SIGTERM)
                    time.sleep(0.2)
                    # no new work is taken while draining
                    try:
                        assert httpx.get(s.url + "/health", timeout=2).status_code == 503
                    except httpx.HTTPError:
                        pass  # the listener is already closed
        events = [ln[len("data: "):] for ln in lines if ln.startswith("data: ")]
        assert events[-1] == "[DONE]"
        finish = [json.loads(e)["choices"][0]["finish_reason"] for e in events[:-1] if json.loads(e)["choices"]]
        assert finish[-1] == "length"
        assert s.proc.wait(timeout=30) == 0
    finally:
        s.stop()


# ---- bad input: each gets its status and an error body, and the server keeps serving ----


def post(server, body: bytes | str, headers=None):
    return httpx.post(server.url + "/v1/chat/completions", content=body, headers=headers or {}, timeout=60)


def chat_body(**kw):
    return json.dumps({"messages": [{"role": "user", "content": "Hi"}], **kw})


def test_malformed_json(server):
    assert_error(post(server, b'{"messages": [}'), 400, "not JSON")
    still_serving(server)


def test_wrong_types(server):
    r = post(server, json.dumps({"messages": "hi"}))
    assert_error(r, 400, "messages")
    # a body that is not an object, a missing field, content missing or empty
    assert_error(post(server, json.dumps(["pixtral-demo", [{"role": "user", "content": "hi"}]])), 400, "JSON object")
    assert_error(post(server, b"{}"), 400, "messages")
    assert_error(post(server, json.dumps({"messages": [{"role": "user"}]})), 400, "messages[0].content")
    assert_error(post(server, json.dumps({"messages": [{"role": "user", "content": []}]})), 400, "messages[0].content")
    r = post(server, json.dumps({"messages": [{"role": "user", "content": "Hi"}], "temperature": "hot"}))
    assert_error(r, 400, "temperature")
    assert r.json()["error"]["param"] == "temperature"
    r = post(server, json.dumps({"messages": [{"role": "robot", "content": "Hi"}]}))
    assert_error(r, 400, "messages[0].role")
    r = post(server, chat_body(temperature=-1))
    assert_error(r, 400, "temperature")
    assert r.json()["error"]["param"] == "temperature"
    assert_error(post(server, chat_body(max_tokens=0)), 400, "max_tokens")
    still_serving(server)


def test_body_over_the_limit(server, tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.write(b'{"messages": [{"role": "user", "content": "')
        f.write(b"a" * (100 << 20))
        f.write(b'"}]}')
    out = subprocess.run(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", server.url + "/v1/chat/completions", "--data-binary", f"@{big}"],
        capture_output=True, text=True,
    ).stdout
    body, code = out.rsplit("\n", 1)
    assert code == "413", out[-500:]
    assert "limit" in json.loads(body)["error"]["message"]
    still_serving(server)


def test_bad_content_parts_are_named(server):
    def content(parts):
        return json.dumps({"messages": [{"role": "user", "content": parts}]})
    for parts, param, words in [
        ([{"type": "text"}], "messages[0].content[0].text", "missing"),
        ([{"type": "input_audio", "input_audio": {}}], "messages[0].content[0].type", "not supported"),
        ([{"type": "image_url"}], "messages[0].content[0].image_url.url", "missing"),
        (["hi"], "messages[0].content[0]", "object"),
        (42, "messages[0].content", "string or a list"),
    ]:
        r = post(server, content(parts))
        assert_error(r, 400, param, words)
        assert r.json()["error"]["param"] == param
    # not an image, in valid base64: the field is named, as for bad base64
    url = "data:image/png;base64," + base64.b64encode(b"hello").decode()
    r = post(server, content([{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]))
    assert_error(r, 400)
    assert r.json()["error"]["param"] == "messages[0].content[0].image_url.url"
    r = post(server, b"{}")
    assert r.json()["error"]["param"] == "messages"
    r = post(server, chat_body(temperature="hot"))
    assert_error(r, 400, "expected a number")
    still_serving(server)


def test_bad_base64(server):
    msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@notbase64"}}]}]
    r = post(server, json.dumps({"messages": msg}))
    assert_error(r, 400, "messages[0].content[0].image_url.url", "base64")
    assert r.json()["error"]["param"] == "messages[0].content[0].image_url.url"
    still_serving(server)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width, height, idat=zlib.compress(b"\0" * 64)) -> bytes:
    """A PNG whose header claims width × height, with a few bytes of (too little) pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def test_image_claiming_100000_squared(server):
    url = "data:image/png;base64," + base64.b64encode(png_header(100000, 100000)).decode()
    msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]}]
    r = post(server, json.dumps({"messages": msg}))
    assert_error(r, 400, "100000")
    still_serving(server)


def test_undecodable_image(server):
    url = "data:image/png;base64," + base64.b64encode(png_header(64, 64, idat=b"garbage")).decode()
    msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}]}]
    assert_error(post(server, json.dumps({"messages": msg})), 400)
    still_serving(server)


def test_file_url_outside_media_dir(server):
    for path in ["/etc/passwd", str(ROOT / "examples" / ".." / "README.md")]:
        msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file://" + path}}]}]
        assert_error(post(server, json.dumps({"messages": msg})), 403, "outside the media directory")
    msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}]}]
    assert_error(post(server, json.dumps({"messages": msg})), 403, "--allow-remote-media")
    still_serving(server)


def test_prompt_too_long_names_both_numbers(server):
    r = post(server, chat_body().replace('"Hi"', json.dumps("word " * 20000)))
    assert_error(r, 400, "6400", "tokens")
    still_serving(server)


def test_n_above_one(server):
    assert_error(post(server, chat_body(n=2)), 400, "n = 1")
    still_serving(server)


def test_unknown_route_and_method(server):
    assert_error(httpx.get(server.url + "/v1/nothing"), 404)
    assert_error(httpx.get(server.url + "/v1/chat/completions"), 405)


def test_api_key(keyed):
    # missing, wrong, right
    assert_error(post(keyed, chat_body()), 401, "missing")
    assert_error(post(keyed, chat_body(), {"Authorization": "Bearer sk-wrong"}), 401, "wrong")
    with pytest.raises(openai.AuthenticationError):
        client(keyed, "sk-wrong").models.list()
    assert client(keyed, KEY).models.list().data[0].id == "pixtral-demo"
    assert httpx.get(keyed.url + "/metrics").status_code == 401
    # /health stays open (load balancers, mistral-evals)
    assert httpx.get(keyed.url + "/health").status_code == 200


def test_cors_preflight_for_the_allowed_origin(keyed):
    pre = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    r = httpx.options(keyed.url + "/v1/chat/completions", headers=pre)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
    r = httpx.options(keyed.url + "/v1/chat/completions", headers={**pre, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_queue_full_is_429(keyed):
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"messages": [{"role": "user", "content": "Go on"}], "stream": True, "ignore_eos": True, "max_tokens": 4000}
    with httpx.stream("POST", keyed.url + "/v1/chat/completions", json=body, headers=auth, timeout=60) as r:
        lines = r.iter_lines()
        next(lines)
        # the one slot is taken and nothing may wait
        second = post(keyed, chat_body(), auth)
        assert_error(second, 429, "--max-queue")
        assert second.headers["retry-after"] == "1"
    deadline = time.time() + 5
    while post(keyed, chat_body(max_tokens=2), auth).status_code != 200:
        assert time.time() < deadline, "the slot was not freed"
        time.sleep(0.05)


def serve_files(directory):
    """A loopback HTTP server for `directory`; returns (base URL, stop)."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd.shutdown


def test_remote_image_with_allow_remote_media(keyed, tmp_path):
    auth = {"Authorization": f"Bearer {KEY}"}
    (tmp_path / "big.png").write_bytes(png_header(64, 64) + b"\0" * 30000)
    (tmp_path / "circle.png").write_bytes(RED_CIRCLE.read_bytes())
    base, stop = serve_files(tmp_path)
    try:
        msg = lambda name: [{"role": "user", "content": [  # noqa: E731
            {"type": "image_url", "image_url": {"url": f"{base}/{name}"}}, {"type": "text", "text": "What shape is this?"}]}]
        r = httpx.post(keyed.url + "/v1/chat/completions", json={"messages": msg("circle.png"), "temperature": 0},
                       headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        want = run_answer("--image", str(RED_CIRCLE), "-p", "What shape is this?")
        assert r.json()["choices"][0]["message"]["content"] == want
        # over --image-bytes, and a missing file
        r = httpx.post(keyed.url + "/v1/chat/completions", json={"messages": msg("big.png")}, headers=auth)
        assert_error(r, 400, "limit")
        r = httpx.post(keyed.url + "/v1/chat/completions", json={"messages": msg("none.png")}, headers=auth)
        assert_error(r, 400, "404")
    finally:
        stop()


def test_bad_response_format(server):
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}
    assert_error(post(server, chat_body(response_format=rf)), 400, "response_format")
    assert_error(post(server, chat_body(response_format={"type": "yaml"})), 400, "response_format")
    still_serving(server)


def test_a_client_gone_before_a_plain_answer_frees_its_slot(server):
    cancelled = server.metric("requests_cancelled_total")
    body = json.dumps({"messages": [{"role": "user", "content": "Go on"}], "ignore_eos": True, "max_tokens": 6000})
    subprocess.run(["curl", "-s", "-m", "0.5", server.url + "/v1/chat/completions", "-d", body], capture_output=True)
    deadline = time.time() + 5
    while server.metric("slots_busy") != 0 or server.metric("requests_cancelled_total") != cancelled + 1:
        assert time.time() < deadline, "the slot was not freed"
        time.sleep(0.02)
