"""Load for an OpenAI-compatible server (ours or llama-server): N concurrent streaming chat requests, greedy,
`ignore_eos`, `max_tokens` T each; prints one JSON line.

    bench_server.py URL N T [IMAGE]

- per stream: time to first token, then seconds per token after it (the server's own token count) = latency;
- aggregate decode tok/s: the streams' rates summed (they overlap: `overlap_s` says for how long all of them were
  decoding at once);
- a short warm-up request comes first (a fresh server's first pass reads every weight page from the page cache);
- with IMAGE (a PNG): one request with the image (cold), then the same image with another question (cached);
  prints both times to first token.
"""

import base64
import json
import sys
import threading
import time

import httpx

PROMPTS = [
    "Write a long story about a lighthouse keeper.",
    "Explain how a steam engine works, step by step.",
    "List the capitals of Europe with a fact about each.",
    "Describe a walk through a forest in autumn.",
    "Tell me about the history of printing.",
    "Write a letter to a friend about a journey by train.",
    "Explain the rules of chess to a beginner.",
    "Describe the life cycle of a star.",
]


def stream(url, messages, max_tokens, out):
    body = {
        "model": "m", "messages": messages, "stream": True, "max_tokens": max_tokens,
        "temperature": 0, "ignore_eos": True, "stream_options": {"include_usage": True},
    }
    t0 = time.time()
    first, tokens = None, None
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=3600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            c = json.loads(line[6:])
            if first is None and c.get("choices") and c["choices"][0]["delta"].get("content"):
                first = time.time()
            if c.get("usage"):
                tokens = c["usage"]["completion_tokens"]
    out.append({"t0": t0, "first": first, "end": time.time(), "tokens": tokens})


def load(url, n, max_tokens):
    """Tokens are the servers' own counts (usage.completion_tokens), not SSE chunks: a chunk may carry no text."""
    results = []
    threads = [
        threading.Thread(target=stream, args=(url, [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], max_tokens, results))
        for i in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # per stream: seconds per token after the first; aggregate: every stream's rate, summed over the window in which
    # all of them were decoding (streams decode at one rate in a batch, so each one's share is its rate × overlap)
    rates = [(r["tokens"] - 1) / (r["end"] - r["first"]) for r in results]
    start, end = max(r["first"] for r in results), min(r["end"] for r in results)
    aggregate = sum(rates) if end > start else 0.0
    return {
        "streams": n,
        "aggregate_tok_s": aggregate,
        "latency_ms": 1e3 * sum(1 / x for x in rates) / n,
        "ttft_s": sum(r["first"] - r["t0"] for r in results) / n,
        "tokens": [r["tokens"] for r in results],
        "overlap_s": max(end - start, 0.0),
    }


def image_ttft(url, image):
    b64 = base64.b64encode(open(image, "rb").read()).decode()
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64}}
    times = []
    for q in ["What is in this picture?", "Describe the colours."]:
        out = []
        stream(url, [{"role": "user", "content": [part, {"type": "text", "text": q}]}], 4, out)
        times.append(out[0]["first"] - out[0]["t0"])
    return {"image_ttft_cold_s": times[0], "image_ttft_cached_s": times[1]}


if __name__ == "__main__":
    url, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # a warm-up request first: a fresh server's first pass touches every weight page
    stream(url, [{"role": "user", "content": "Hello"}], 4, [])
    if len(sys.argv) > 4:
        print(json.dumps(image_ttft(url, sys.argv[4])))
    else:
        print(json.dumps(load(url, n, t)))
