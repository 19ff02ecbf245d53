#!/usr/bin/env bash
# Installs PostgreSQL (Debian's package) for the worker tests, which start their own throwaway
# clusters from /usr/lib/postgresql/*/bin. Idempotent; starts no service.
set -euo pipefail
if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y postgresql
