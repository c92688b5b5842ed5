#!/usr/bin/env bash
# Runs one phase of `make test` and prints how long it took, so a slow CI run says where.
name=$1; shift
start=$(date +%s)
echo "==> $name" >&2
"$@"; rc=$?
echo "==> $name: $(( $(date +%s) - start ))s (exit $rc)" >&2
exit $rc
