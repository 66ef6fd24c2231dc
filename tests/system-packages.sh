#!/usr/bin/env bash
# The system packages the build and the tests need, installed when missing
# (Debian/Ubuntu, as root): libclang for RocksDB's bindgen, the openssl CLI
# for the TLS tests' certificates, headless Chromium and its driver for the
# dashboard's browser test, promtool (package prometheus) for the metrics
# test. Called by tests/run.sh and .ci/run.
set -euo pipefail
missing=()
ls /usr/lib/llvm-*/lib/libclang.so* > /dev/null 2>&1 || missing+=(libclang-dev)
command -v openssl > /dev/null || missing+=(openssl)
command -v chromium > /dev/null || missing+=(chromium)
command -v chromedriver > /dev/null || missing+=(chromium-driver)
command -v promtool > /dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]] || ! command -v apt-get > /dev/null; then
    echo "missing system packages: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" > /dev/null
fi
