#!/usr/bin/env bash
# Builds the CUDA backend plugin, loom-cuda.so, with nvcc and a C compiler alone: from
# backends/cuda/*.c, backends/cuda/*.cu and include/ only, for machines that have a CUDA toolkit
# but none of the Debian packages meson's build of Loom needs (the GPU machine of bench/gpu.sh).
# meson builds the same plugin where it can (-Dcuda, backends/cuda/meson.build).
#
#   backends/cuda/build.sh [OUT_DIR]     (default: build-cuda-sh/ at the top of the tree)
#
# Prints the plugin's path as its last line. Environment:
#   NVCC       the nvcc to use (default: nvcc on PATH); its toolkit's runtime and cuBLAS are
#              linked, and its library folder is put in the plugin's rpath
#   CC         the C compiler for the .c files (default: cc)
#   CUDA_ARCH  compute capability to build for, e.g. 90 (default: the first GPU's, from
#              nvidia-smi, else 90: H100/H200); SASS for it plus PTX, which newer GPUs compile
#   CCBIN      nvcc's host compiler (default: nvcc's own choice; when nvcc refuses it, as
#              CUDA 11.8 refuses GCC 12, the first of clang++-14, clang++, g++-11, g++-10 it
#              accepts)
# Warnings are shown (-Wall -Wextra for the C files, -Xcompiler -Wall,-Wextra for nvcc), not
# fatal: the figures of a GPU run should not wait on a new compiler's new warning.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/../.." && pwd)"
out="${1:-$top/build-cuda-sh}"
nvcc="${NVCC:-nvcc}"
cc="${CC:-cc}"

command -v "$nvcc" >/dev/null || { echo "build.sh: no nvcc ($nvcc) on PATH" >&2; exit 1; }
nvcc="$(command -v "$nvcc")"
# The toolkit's root: bin/nvcc under it (Debian's /usr/bin/nvcc: /usr).
root="$(cd "$(dirname "$(readlink -f "$nvcc")")/.." && pwd)"
[ "$root" = /usr/lib/nvidia-cuda-toolkit ] && root=/usr
inc="$root/include"
[ -f "$inc/cublas_v2.h" ] || { echo "build.sh: no cublas_v2.h under $inc" >&2; exit 1; }
libdir=""
for d in "$root/lib64" "$root/lib"; do
    if [ -e "$d/libcudart.so" ]; then
        libdir="$d"
        break
    fi
done

arch="${CUDA_ARCH:-}"
if [ -z "$arch" ] && command -v nvidia-smi >/dev/null; then
    # "9.0" -> 90; drivers older than 510 do not know compute_cap: then the default.
    arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 |
        tr -d ' .\r')" || arch=""
    [[ "$arch" =~ ^[0-9]+$ ]] || arch=""
fi
arch="${arch:-90}"

mkdir -p "$out"
obj="$out/obj"
mkdir -p "$obj"

nvcc_args=(-O3 -std=c++14 -gencode "arch=compute_$arch,code=[sm_$arch,compute_$arch]"
    -Xcompiler -fPIC,-Wall,-Wextra,-fvisibility=hidden)
if [ -n "${CCBIN:-}" ]; then
    nvcc_args+=(-ccbin "$CCBIN")
elif ! "$nvcc" -E -x cu "$here/cuda_kernels.cu" -o /dev/null >/dev/null 2>&1; then
    found=""
    for c in clang++-14 clang++ g++-11 g++-10; do
        if command -v "$c" >/dev/null &&
            "$nvcc" -ccbin "$c" -E -x cu "$here/cuda_kernels.cu" -o /dev/null >/dev/null 2>&1; then
            found="$c"
            break
        fi
    done
    [ -n "$found" ] || { echo "build.sh: $nvcc accepts none of the host compilers here (set CCBIN)" >&2; exit 1; }
    nvcc_args+=(-ccbin "$found")
fi

echo "build.sh: $("$nvcc" --version | grep -m1 release | sed 's/.*release/CUDA/'), sm_$arch" \
     "(+PTX), toolkit $root -> $out" >&2
objs=()
for f in "$here"/*.cu; do
    o="$obj/$(basename "$f" .cu).o"
    "$nvcc" "${nvcc_args[@]}" -c "$f" -o "$o"
    objs+=("$o")
done
for f in "$here"/*.c; do
    o="$obj/$(basename "$f" .c).o"
    "$cc" -std=c11 -D_GNU_SOURCE -O2 -fPIC -fvisibility=hidden -Wall -Wextra \
        -I"$top/include" -isystem "$inc" -c "$f" -o "$o"
    objs+=("$o")
done
link=(-shared -o "$out/loom-cuda.so" "${objs[@]}" -lcublas -Xcompiler -pthread)
if [ -n "$libdir" ]; then
    link+=(-L"$libdir" -Xlinker "-rpath,$libdir")
fi
# nvcc links the CUDA runtime (shared: one copy with cuBLAS's) and the C++ runtime the
# kernels' host code needs.
"$nvcc" "${nvcc_args[@]}" -cudart shared "${link[@]}"
echo "$out/loom-cuda.so"
