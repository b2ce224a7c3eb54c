#!/usr/bin/env bash
# `pixtral serve` vs llama-server on the SAME GGUF file, same threads, same slots, same load (scripts/bench_server.py):
# aggregate decode tok/s and per-stream latency for 1, 2, 4, 8 parallel streams; then our time to first token for a
# request with a 512×512 image, cold and with the image cached; and `pixtral run`'s single-stream decode for
# reference (alternating runs). Not a test: a table for README and the closing note.
#   usage: scripts/bench-server.sh [FILE=scratch/p12b-q4_0.gguf] [THREADS=2] [TOKENS=32] [STREAMS="1 2 4 8"]
# llama-server: $LLAMA_SERVER, else scratch/llama-server/src/build/bin/llama-server, built here on first use from the
# llama.cpp source that PyPI's llama-cpp-python 0.3.36 sdist vendors (AVX-512 with VNNI/BF16, AMX off: its AMX path
# crashes on these machines; cmake from PyPI). Each server gets `--parallel N` and N × 1024 tokens of context.
set -euo pipefail
cd "$(dirname "$0")/.."
FILE=${1:-scratch/p12b-q4_0.gguf}; THREADS=${2:-2}; TOKENS=${3:-32}; STREAMS=${4:-"1 2 4 8"}
PORT=${PORT:-8181}
PY=target/server-venv/bin/python
[ -x $PY ] || { python3 -m venv target/server-venv && target/server-venv/bin/pip install -q "httpx>=0.27,<1"; }
cargo build --release --bin pixtral

LLAMA_SERVER=${LLAMA_SERVER:-scratch/llama-server/src/build/bin/llama-server}
if [ ! -x "$LLAMA_SERVER" ]; then
    src=scratch/llama-server/src
    mkdir -p $src
    url=$(curl -s https://pypi.org/simple/llama-cpp-python/ | grep -o 'https://files[^"#]*llama_cpp_python-0.3.36.tar.gz' | head -1)
    curl -s "$url" | tar xz -C $src --strip-components=3 llama_cpp_python-0.3.36/vendor/llama.cpp
    python3 -m venv scratch/llama-server/cmake && scratch/llama-server/cmake/bin/pip install -q cmake
    CMAKE=scratch/llama-server/cmake/bin/cmake
    $CMAKE -S $src -B $src/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
        -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
        -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null
    $CMAKE --build $src/build --target llama-server -j"$(nproc)" >/dev/null
fi

wait_ready() {
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
        sleep 0.5
    done
    echo "server did not come up" >&2; return 1
}

# one server at a time: start, load, stop
measure() { # NAME N CMD...
    local name=$1 n=$2; shift 2
    "$@" >"target/bench-$name-$n.log" 2>&1 &
    local pid=$!
    wait_ready
    $PY scripts/bench_server.py "http://127.0.0.1:$PORT" "$n" "$TOKENS" | sed "s/^/$name /"
    kill -TERM $pid; wait $pid || true
}

for n in $STREAMS; do
    ctx=$((n * 1024))
    measure pixtral "$n" target/release/pixtral serve -m "$FILE" --port $PORT -t "$THREADS" --parallel "$n" -c $ctx
    measure llama-server "$n" "$LLAMA_SERVER" -m "$FILE" --port $PORT -t "$THREADS" -tb "$THREADS" -np "$n" -c $ctx \
        --no-webui
done

# time to first token with a 512² image: cold, then cached (another question about the same image)
IMG=${IMAGE:-scratch/photo512.png}
if [ -f "$IMG" ]; then
    target/release/pixtral serve -m "$FILE" --port $PORT -t "$THREADS" -c 4096 >target/bench-pixtral-image.log 2>&1 &
    pid=$!
    wait_ready
    $PY scripts/bench_server.py "http://127.0.0.1:$PORT" 1 4 "$IMG" | sed "s/^/pixtral /"
    kill -TERM $pid; wait $pid || true
fi

# single stream: the server against `pixtral run` (the same prompt and tokens), alternating, 3 each, medians of
# seconds per token after the first (run: the decode passes after the prompt, (T - 1) / generation_s)
target/release/pixtral serve -m "$FILE" --port $PORT -t "$THREADS" -c 1024 >target/bench-pixtral-single.log 2>&1 &
pid=$!
wait_ready
PROMPT="Write a long story about a lighthouse keeper."
for _ in 1 2 3; do
    $PY scripts/bench_server.py "http://127.0.0.1:$PORT" 1 "$TOKENS" | $PY -c "import json,sys; print(json.load(sys.stdin)['latency_ms'])" >>target/bench-single-serve.txt
    kill -STOP $pid
    target/release/pixtral run -m "$FILE" -t "$THREADS" -p "$PROMPT" -n "$TOKENS" --ignore-eos --temp 0 --json 2>/dev/null |
        $PY -c "import json,sys; d=json.load(sys.stdin); print(1e3 * d['timings']['generation_s'] / ($TOKENS - 1))" >>target/bench-single-run.txt
    kill -CONT $pid
done
kill -TERM $pid; wait $pid || true
$PY - <<'PYEOF'
import json, statistics
serve = [float(x) for x in open("target/bench-single-serve.txt")]
run = [float(x) for x in open("target/bench-single-run.txt")]
print("single", json.dumps({"serve_ms_per_token": serve, "run_ms_per_token": run,
                            "serve_over_run": statistics.median(serve) / statistics.median(run)}))
PYEOF
rm -f target/bench-single-serve.txt target/bench-single-run.txt
