#!/usr/bin/env bash
# Installs s3s-fs, the S3-protocol server (it checks SigV4 signatures and presigned-URL expiry)
# that the storage and export tests start on a free loopback port with a temporary root
# (tests/support/s3.rs). Idempotent; starts no service.
set -euo pipefail
VERSION=0.14.1
export PATH="$HOME/.cargo/bin:$PATH"
if command -v s3s-fs >/dev/null 2>&1; then
    exit 0
fi
cargo install "s3s-fs@$VERSION" --locked --features binary
