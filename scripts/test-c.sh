#!/usr/bin/env bash
# The C ABI end to end: build libpixtral (capi/), compile examples/c/describe.c with the system C compiler against
# the committed header, and run it on the demo model under valgrind (no leak, no invalid access) — once linked
# to the shared library, once statically; then capi/tests/errors.c, bad input through every entry point. The
# header itself is checked by `cargo test -p pixtral-capi`.
set -euo pipefail
cd "$(dirname "$0")/.."
need() { command -v "$1" >/dev/null 2>&1; }
if ! need cc || ! need valgrind; then
    echo "installing a C compiler and valgrind (Debian packages)..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev valgrind >/dev/null
fi
cargo build --release -p pixtral-capi
lib=${CARGO_TARGET_DIR:-target}/release
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -std=c11 -Wall -Wextra -Werror examples/c/describe.c -Icapi/include -L$lib -lpixtral -o "$tmp/describe"
cc -std=c11 -Wall -Wextra -Werror examples/c/describe.c -Icapi/include $lib/libpixtral.a -lm -lpthread -ldl -o "$tmp/describe-static"
want=$'A triangle.\nBlue.\nA triangle.'
for bin in describe describe-static; do
    # 2 worker threads: the pool's threads live as long as the process (still reachable, not leaks)
    if ! out=$(LD_LIBRARY_PATH=$lib timeout 600 valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --show-leak-kinds=definite,indirect --error-exitcode=99 "$tmp/$bin" examples/demo/pixtral-demo.gguf \
        examples/blue-triangle.png 2 2>"$tmp/err"); then
        cat "$tmp/err"
        echo "C example ($bin): failed under valgrind" >&2
        exit 1
    fi
    if [ "$out" != "$want" ]; then
        cat "$tmp/err"
        echo "C example ($bin): expected '$want', got '$out'" >&2
        exit 1
    fi
    echo "C example ($bin): answers as expected, valgrind clean"
done
# bad input through the ABI: a status and a message naming the fault for each, never a crash, no leak
cc -std=c11 -Wall -Wextra -Werror capi/tests/errors.c -Icapi/include -L$lib -lpixtral -o "$tmp/errors"
if ! LD_LIBRARY_PATH=$lib timeout 600 valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
    --show-leak-kinds=definite,indirect --error-exitcode=99 "$tmp/errors" examples/demo/pixtral-demo.gguf \
    examples/blue-triangle.png >"$tmp/out" 2>"$tmp/err"; then
    cat "$tmp/out" "$tmp/err"
    echo "C ABI error checks failed" >&2
    exit 1
fi
tail -1 "$tmp/out"
echo "C ABI: $(stat -c %s $lib/libpixtral.so) bytes libpixtral.so, links: $(ldd $lib/libpixtral.so | awk '{print $1}' | tr '\n' ' ')"
