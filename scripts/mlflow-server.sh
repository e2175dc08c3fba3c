#!/usr/bin/env bash
# Starts an MLflow tracking server (a fresh SQLite store under target/mlflow-data) on a free loopback
# port for the tests, and prints the `export` lines that point the tests at it and at the
# Python that has MLflow's client, TensorBoard's reader and securesystemslib. scripts/test.sh sources its output
# and stops the server (its pid is FLOW_TEST_MLFLOW_PID) when the tests end.
#
#   eval "$(bash scripts/mlflow-server.sh)"
#
# mlflow, tensorboard and securesystemslib (the independent DSSE implementation tests/trust.rs
# checks flow's signatures with) are installed once into target/export-venv (about a minute;
# PyPI must be reachable).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/export-venv
if [ ! -x "$venv/bin/mlflow" ] || ! "$venv/bin/python" -c 'import tensorboard, securesystemslib' 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "mlflow==3.17.2" "tensorboard==2.21.0" \
    "securesystemslib==1.6.0" >&2
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
data=$PWD/target/mlflow-data
rm -rf "$data" && mkdir -p "$data"
"$venv/bin/mlflow" server --host 127.0.0.1 --port "$port" --workers 1 \
  --backend-store-uri "sqlite:///$data/mlflow.db" --default-artifact-root "$data/artifacts" \
  >target/mlflow.log 2>&1 &
pid=$!
# Ready when the REST API answers; give up after 60 s (the first start migrates the database).
python3 scripts/wait-http.py GET "http://127.0.0.1:$port/api/2.0/mlflow/experiments/search?max_results=1" 60 >&2 \
  || { kill "$pid"; echo "the MLflow test server did not start; see target/mlflow.log" >&2; exit 1; }
echo "export FLOW_TEST_MLFLOW=http://127.0.0.1:$port FLOW_TEST_MLFLOW_PID=$pid FLOW_TEST_PYTHON=$PWD/$venv/bin/python"
