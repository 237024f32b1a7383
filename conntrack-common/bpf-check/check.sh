#!/usr/bin/env bash
# Builds the conntrack-common engine for BPF and checks that no panic path is reachable and the
# stack frames stay small. Needs nightly with rust-src and bpf-linker on PATH (.tools/bin).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export PATH="$root/.tools/bin:$PATH"
target_dir="$root/target/bpf-check"
cd "$here"
cargo +nightly build --target bpfel-unknown-none -Z build-std=core --release --target-dir "$target_dir"
obj="$target_dir/bpfel-unknown-none/release/conntrack-common-bpf-check"
if llvm-readelf -s "$obj" | grep -q '__reachable_panic'; then
    echo "FAIL: a panic path is reachable in conntrack-common (see $obj)" >&2
    exit 1
fi
max_stack=$(llvm-objdump -d --no-show-raw-insn "$obj" | grep -o 'r10 - [0-9a-fx]*' | awk '{print $3}' \
    | while read -r v; do echo $((v)); done | sort -n | tail -1)
insns=$(llvm-objdump -d --no-show-raw-insn "$obj" | grep -c '^ *[0-9a-f]*:' || true)
echo "ok: no reachable panic; max stack offset ${max_stack:-0} bytes; ${insns} instructions"
if [ "${max_stack:-0}" -gt 384 ]; then
    echo "FAIL: stack use ${max_stack} > 384 bytes" >&2
    exit 1
fi
