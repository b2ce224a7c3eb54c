"""Load for an OpenAI-compatible server (ours or llama-server): N concurrent streaming chat requests, greedy,
`ignore_eos`, `max_tokens` T each; prints one JSON line.

    bench_server.py URL N T [IMAGE]

- per stream: time to first token, then the mean gap between tokens (SSE chunks with content) = latency;
- aggregate decode tok/s: tokens that arrived while every stream was decoding (after the last first token, before
  the first stream ended), over that window: the steady state of N streams batched;
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
        "temperature": 0, "ignore_eos": True,
    }
    t0 = time.time()
    stamps = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=3600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            c = json.loads(line[6:])
            if c.get("choices") and c["choices"][0]["delta"].get("content"):
                stamps.append(time.time())
    out.append({"t0": t0, "stamps": stamps})


def load(url, n, max_tokens):
    results = []
    threads = [
        threading.Thread(target=stream, args=(url, [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], max_tokens, results))
        for i in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    start = max(r["stamps"][0] for r in results)
    end = min(r["stamps"][-1] for r in results)
    in_window = sum(sum(1 for s in r["stamps"] if start < s <= end) for r in results)
    gaps = [(r["stamps"][-1] - r["stamps"][0]) / max(len(r["stamps"]) - 1, 1) for r in results]
    return {
        "streams": n,
        "aggregate_tok_s": in_window / (end - start) if end > start else 0.0,
        "latency_ms": 1e3 * sum(gaps) / len(gaps),
        "ttft_s": sum(r["stamps"][0] - r["t0"] for r in results) / n,
        "tokens": [len(r["stamps"]) for r in results],
    }


def image_ttft(url, image):
    b64 = base64.b64encode(open(image, "rb").read()).decode()
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64}}
    times = []
    for q in ["What is in this picture?", "Describe the colours."]:
        out = []
        stream(url, [{"role": "user", "content": [part, {"type": "text", "text": q}]}], 4, out)
        times.append(out[0]["stamps"][0] - out[0]["t0"])
    return {"image_ttft_cold_s": times[0], "image_ttft_cached_s": times[1]}


if __name__ == "__main__":
    url, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if len(sys.argv) > 4:
        print(json.dumps(image_ttft(url, sys.argv[4])))
    else:
        print(json.dumps(load(url, n, t)))
