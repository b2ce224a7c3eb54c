#!/usr/bin/env bash
# aarch64 / NEON on this x86 machine: cross-build with Debian's Rust (rustc-web, which ships the aarch64 std), run
# under qemu-user. Runs the kernel self-test (NEON kernels against their scalar twins) and an end-to-end greedy
# answer of the tiny model, converted on the host and run by the aarch64 binary.
# In this workplace's containers qemu-user (7.2 and 10.0 alike) hangs when the guest creates a thread, so both run
# on the main thread: the self-test is a plain binary (not the threaded test harness), and `pixtral run -t 1` is
# serial mode, which creates no thread.
set -euo pipefail
cd "$(dirname "$0")/.."
need() { command -v "$1" >/dev/null 2>&1; }
if ! need qemu-aarch64-static || ! need aarch64-linux-gnu-gcc || ! [ -x /usr/bin/cargo ] || ! [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ]; then
    echo "installing the aarch64 cross toolchain and qemu (Debian packages)..."
    dpkg --add-architecture arm64
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web gcc-aarch64-linux-gnu qemu-user-static libstd-rust-web-dev:arm64 >/dev/null
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
CARGO="env RUSTC=/usr/bin/rustc /usr/bin/cargo"   # Debian's toolchain, for the aarch64 std; the host build below uses the default one
TARGET=aarch64-unknown-linux-gnu
DIR=target/cross

$CARGO build -p pixtral-quant --example selftest --target $TARGET --target-dir $DIR --release
# three CPUs, one per R16 kernel of the NEON tier: qemu's "max" has the dot product and I8MM (`usmmla` tiles), a
# Neoverse N1 (Armv8.2) the dot product only (`sdot` tiles), a Cortex-A53 (Armv8.0) neither (no R16: gemm4 dots)
CPUS="max:true:true neoverse-n1:true:false cortex-a53:false:false" # cpu:dotprod:i8mm
for c in $CPUS; do
    IFS=: read -r cpu dot mm <<<"$c"
    selftest=$(timeout 600 qemu-aarch64-static -cpu $cpu -L /usr/aarch64-linux-gnu $DIR/$TARGET/release/examples/selftest)
    echo "[$cpu] $selftest"
    grep -q "Neon" <<<"$selftest" || { echo "aarch64: the NEON tier was not tested" >&2; exit 1; }
    grep -q "aarch64 dotprod: $dot" <<<"$selftest" || { echo "aarch64 $cpu: expected dotprod $dot" >&2; exit 1; }
    grep -q "aarch64 i8mm: $mm" <<<"$selftest" || { echo "aarch64 $cpu: expected i8mm $mm" >&2; exit 1; }
done

# end to end: the host converts, the aarch64 binary answers (greedy: the same words on every ISA)
$CARGO build --release --bin pixtral --target $TARGET --target-dir $DIR
cargo build --release --bin pixtral
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
${CARGO_TARGET_DIR:-target}/release/pixtral convert tests/fixtures/tiny/hf --outtype q4_0 -o "$tmp/tiny.gguf" >/dev/null 2>&1
# the NEON tier on each CPU (weights re-laid out R16 where it has an R16 kernel), then the scalar tier
for c in neon:max:yes neon:neoverse-n1:yes neon:cortex-a53:no scalar:max:no; do # isa:cpu:R16
    IFS=: read -r isa cpu r16 <<<"$c"
    out=$(PIXTRAL_ISA=$isa timeout 300 qemu-aarch64-static -cpu $cpu -L /usr/aarch64-linux-gnu $DIR/$TARGET/release/pixtral run -m "$tmp/tiny.gguf" \
        -p "Describe a red circle in one word." --temp 0 -t 1 2>"$tmp/err")
    grep -q "ISA $isa" "$tmp/err" || { cat "$tmp/err"; echo "aarch64: ISA $isa was not used" >&2; exit 1; }
    if [ $r16 = yes ] && ! grep -q "re-laid out R16" "$tmp/err"; then
        cat "$tmp/err"; echo "aarch64 $isa ($cpu): the weights were not re-laid out R16" >&2; exit 1
    elif [ $r16 = no ] && grep -q "re-laid out R16" "$tmp/err"; then
        cat "$tmp/err"; echo "aarch64 $isa ($cpu): R16 without an R16 kernel" >&2; exit 1
    fi
    if [ "$out" != "Round." ]; then
        cat "$tmp/err"
        echo "aarch64 $isa: expected 'Round.', got '$out'" >&2
        exit 1
    fi
    echo "aarch64 $isa ($cpu): end-to-end greedy answer ok ($out), R16: $r16"
done

# a community file (llama.cpp's own Q4_K_M: Q4_K, Q6_K and Q5_0 tensors) answers as on this machine, on the NEON
# tier with and without the dot product, and on the scalar tier
kf=tests/fixtures/llama-cpp-quants/tinyk-Q4_K_M.gguf
want=$(${CARGO_TARGET_DIR:-target}/release/pixtral run -m $kf -p "Describe a red circle in one word." --temp 0 -t 1 2>/dev/null)
for c in neon:max neon:cortex-a53 scalar:max; do
    IFS=: read -r isa cpu <<<"$c"
    out=$(PIXTRAL_ISA=$isa timeout 300 qemu-aarch64-static -cpu $cpu -L /usr/aarch64-linux-gnu $DIR/$TARGET/release/pixtral run -m $kf \
        -p "Describe a red circle in one word." --temp 0 -t 1 2>"$tmp/err") || { cat "$tmp/err"; exit 1; }
    [ "$out" = "$want" ] || { cat "$tmp/err"; echo "aarch64 $isa ($cpu): Q4_K_M answered '$out', x86-64 '$want'" >&2; exit 1; }
    echo "aarch64 $isa ($cpu): llama.cpp's Q4_K_M answers as on x86-64 ($out)"
done

# the C ABI on an edge box: libpixtral cross-built, the C example cross-compiled against the committed header and
# run under qemu (one thread: serial mode, see above), answering as on x86-64
$CARGO build --release -p pixtral-capi --target $TARGET --target-dir $DIR
aarch64-linux-gnu-gcc -std=c11 -Wall -Wextra -Werror examples/c/describe.c -Icapi/include \
    -L$DIR/$TARGET/release -lpixtral -o "$tmp/describe"
out=$(LD_LIBRARY_PATH=$DIR/$TARGET/release timeout 600 qemu-aarch64-static -cpu max -L /usr/aarch64-linux-gnu "$tmp/describe" \
    examples/demo/pixtral-demo.gguf examples/blue-triangle.png 1 2>"$tmp/err") || { cat "$tmp/err"; echo "aarch64: the C example failed" >&2; exit 1; }
if [ "$out" != $'A triangle.\nBlue.\nA triangle.' ]; then
    cat "$tmp/err"; echo "aarch64: the C example answered '$out'" >&2; exit 1
fi
echo "aarch64: C example ok ($(stat -c %s $DIR/$TARGET/release/libpixtral.so) bytes libpixtral.so)"
echo "aarch64: 2 passed, 0 failed"
