#!/usr/bin/env bash
# pixtral vs llama.cpp on the SAME full-shape Pixtral-12B GGUF files (random weights), same threads, same prompt
# length, alternating runs; prints a table with the ratio ours / llama.cpp.
#   usage: scripts/bench-vs-llamacpp.sh [PP=512] [TG=128] [RUNS=3] [THREADS=2]
#   TYPES="q4_0 q8_0" (default) picks the files; PIXTRAL_ISA=avx2 etc. picks our tier (llama.cpp's is its build's).
#   TG=0 times prompt processing only. llama.cpp runs with flash attention on (its fastest long-prompt path, and
#   its default where supported); FLASH_ATTN=0 turns it off.
# Needs ~45 GB of disk under scratch/ while it converts (the 25 GB random checkpoint, removed afterwards, and the
# 8 + 14 GB Q4_0 / Q8_0 files) and the venv.
# llama.cpp comes from PyPI's llama-cpp-python, built from source for this CPU. Its 0.3.36 native build crashes in
# its AMX path on AMX CPUs, so on AVX-512 CPUs the default build names AVX-512 (with VNNI, VBMI, BF16) explicitly
# and turns AMX off: llama.cpp built for the same CPU minus the crash. LLAMA_CMAKE_ARGS builds it differently (e.g.
# the AVX2-only flags, to compare with PIXTRAL_ISA=avx2).
set -euo pipefail
cd "$(dirname "$0")/.."
PP=${1:-512}; TG=${2:-128}; RUNS=${3:-3}; THREADS=${4:-2}
PY=.venv/bin/python
[ -x $PY ] || scripts/setup-venv.sh
if ! $PY -c "import llama_cpp" 2>/dev/null; then
    if grep -q avx512f /proc/cpuinfo; then
        : "${LLAMA_CMAKE_ARGS:=-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF}"
    fi
    CMAKE_ARGS="${LLAMA_CMAKE_ARGS:-}" .venv/bin/pip install llama-cpp-python
fi
cargo build --release --bin pixtral
mkdir -p scratch
CK=scratch/pixtral-12b-random
for t in q4_0 q8_0; do
    [ -f scratch/p12b-$t.gguf ] && continue
    [ -f $CK/consolidated.safetensors ] || $PY scripts/make_random_checkpoint.py $CK
    target/release/pixtral convert $CK --outtype $t -o scratch/p12b-$t.gguf
done
# the 25 GB checkpoint is only a source for the conversions; KEEP_CHECKPOINT=1 keeps it
[ "${KEEP_CHECKPOINT:-0}" = 1 ] || rm -rf $CK
cat > scratch/llama_bench.py <<'PYEOF'
import json, statistics, sys, time, llama_cpp
path, pp, tg, runs, threads, fa = sys.argv[1], *map(int, sys.argv[2:7])
llm = llama_cpp.Llama(model_path=path, n_ctx=pp + tg + 8, n_threads=threads, n_threads_batch=threads, n_batch=512,
                      flash_attn=bool(fa), verbose=False)
toks = [1] + [1000 + (i * 7919) % 130000 for i in range(1, pp)]
pps, tgs = [], []
for _ in range(runs):
    llm.reset()
    t = time.time(); llm.eval(toks); pps.append(pp / (time.time() - t))
    if tg == 0:
        continue
    llm.reset(); llm.eval([1])
    t = time.time()
    for i in range(tg):
        llm.eval([1000 + i])
    tgs.append(tg / (time.time() - t))
print(json.dumps({"pp": statistics.median(pps), "tg": statistics.median(tgs) if tgs else 0}))
PYEOF
printf "| file | test | pixtral t/s | llama.cpp t/s | ratio |\n|---|---|---|---|---|\n"
for t in ${TYPES:-q4_0 q8_0}; do
    f=scratch/p12b-$t.gguf
    # alternate: ours, theirs, for each test
    ours_pp=$(target/release/pixtral bench -m $f -p $PP -n 0 -r $RUNS -t $THREADS -o json | $PY -c "import json,sys; print(json.load(sys.stdin)[0]['median_ts'])")
    theirs=$($PY scratch/llama_bench.py $f $PP $TG $RUNS $THREADS "${FLASH_ATTN:-1}")
    ours_tg=0
    [ "$TG" = 0 ] || ours_tg=$(target/release/pixtral bench -m $f -p 0 -n $TG -r $RUNS -t $THREADS -o json | $PY -c "import json,sys; print(json.load(sys.stdin)[0]['median_ts'])")
    $PY - "$t" "$ours_pp" "$ours_tg" "$theirs" "$PP" "$TG" <<'PYEOF'
import json, sys
t, opp, otg, theirs, pp, tg = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5], sys.argv[6]
for name, o, l in [(f"pp{pp}", opp, theirs["pp"]), (f"tg{tg}", otg, theirs["tg"])]:
    if l == 0:
        continue
    print(f"| {t} | {name} | {o:.2f} | {l:.2f} | {o / l:.2f} |")
PYEOF
done
