#!/usr/bin/env bash
# Starts an S3-compatible server (moto, in memory) on a free loopback port for the tests, and
# prints the `export` lines that point the tests at it. scripts/test.sh sources its output and
# stops the server (its pid is FLOW_TEST_S3_PID) when the tests end.
#
#   eval "$(bash scripts/s3-server.sh)"
#
# moto is installed once into target/moto-venv (about 45 s; PyPI must be reachable). The
# bucket `flow-test` is created empty.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/moto-venv
if [ ! -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==5.2.5" >&2
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >target/moto.log 2>&1 &
pid=$!
# Ready when the bucket can be created; give up after 30 s.
python3 scripts/wait-http.py PUT "http://127.0.0.1:$port/flow-test" 30 >&2 \
  || { kill "$pid"; echo "the S3 test server did not start; see target/moto.log" >&2; exit 1; }
echo "export FLOW_TEST_S3_ENDPOINT=http://127.0.0.1:$port FLOW_TEST_S3_BUCKET=flow-test FLOW_TEST_S3_PID=$pid"
