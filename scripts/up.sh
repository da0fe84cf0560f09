#!/usr/bin/env bash
# Command 1: install hostplane into .venv and run the embedded default
# (SQLite, panel, workers) with `hostplane up`. Arguments go to `hostplane up`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bootstrap-python.sh
bootstrap_python
exec .venv/bin/hostplane up "$@"
