#!/usr/bin/env bash
# Installs the Python tools the chart tests drive (tests/chart.rs): helm-python-sdk (the Helm v4
# engine, no helm binary needed) and kubernetes-validate. Idempotent: installs only what is
# missing, so a warm machine does no network work.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null; then
  echo "python3 is required for the chart tests; not found on PATH" >&2
  exit 1
fi

missing=()
"$PYTHON" -c 'import helm_python' >/dev/null 2>&1 || missing+=(helm-python-sdk)
"$PYTHON" -c 'import kubernetes_validate' >/dev/null 2>&1 || missing+=(kubernetes-validate)

if [ "${#missing[@]}" -eq 0 ]; then
  echo "helm-python-sdk and kubernetes-validate already installed"
  exit 0
fi

echo "installing: ${missing[*]}"
"$PYTHON" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
