#!/usr/bin/env bash
# Everything measured on a borrowed GPU machine, in one run of a few minutes: our kernels and
# model stages (this build, and the build before the change when .carry/darkroom-before exists)
# and PyTorch on the same card as the peer. Prepared on the development machine:
#   cargo build --profile gpu-bench -p darkroom-cli && mkdir -p .carry &&
#   cp target/gpu-bench/darkroom .carry/
# plus, in .gl, the Vulkan/GL loader packages the bare machine lacks, and in .whl the diffusers
# wheel (the machine has PyTorch and transformers but not diffusers). Output: $OUT/*.txt, copied
# to docs/bench/ by hand. SKIP_PEER=1 leaves PyTorch out (a second run in the same session).
set -u
OUT=${OUT:-/tmp/gpu-bench-out}
mkdir -p "$OUT"
log() { echo "== $*"; }

for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
export XDG_RUNTIME_DIR=/tmp
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/machine.txt"

ours=.carry/darkroom
run() { # name, command…
    local name=$1
    shift
    log "$name: $*"
    timeout 150 "$@" 2>&1 | tee "$OUT/$name.txt"
}
run kernels $ours bench kernels --runs 5
run sd-turbo $ours bench models --model sd-turbo --runs 5 --profile
run sd15 $ours bench models --model sd15 --runs 5 --profile
if [ -x .carry/darkroom-before ]; then
    run before-kernels .carry/darkroom-before bench kernels --runs 5
    run before-sd-turbo .carry/darkroom-before bench models --model sd-turbo --runs 5
fi

if [ -n "${SKIP_PEER:-}" ]; then
    log done
    exit 0
fi
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl &&
        export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
run torch-sd-turbo python3 tests/bench/torch_peer.py --model sd-turbo
run torch-sd15 python3 tests/bench/torch_peer.py --model sd15
log done
