# shellcheck shell=bash
# Sourced by the build scripts: runs a `go build` while printing, on stderr, which binary, how far and
# the time so far, so that a cold build (minutes) never leaves a silent terminal. One line per report:
#
#   build: <name>: resolving packages, 12s
#   build: <name>: 412/1583 packages, 1m05s
#   build: <name>: linking, 3m10s
#   build: <name>: built in 3m24s
#
# `make demo` parses these lines into progress bars; elsewhere they are the log. A line comes every
# MAILTRAIN_PROGRESS_INTERVAL seconds (default 2 on a terminal, 10 otherwise).

_progress_interval() {
  if [ -n "${MAILTRAIN_PROGRESS_INTERVAL:-}" ]; then echo "$MAILTRAIN_PROGRESS_INTERVAL"
  elif [ -t 2 ]; then echo 2
  else echo 10; fi
}

_elapsed() {  # seconds -> 1m05s
  local s=$1
  if [ "$s" -ge 60 ]; then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi
}

# _run_reporting NAME START LOG -- command...: runs the command with stderr to LOG and, while it runs,
# reports every interval what _report_line says.
_run_reporting() {
  local name=$1 start=$2 log=$3 total=$4; shift 5
  local interval last=$SECONDS pid rc=0
  interval=$(_progress_interval)
  "$@" 2>"$log" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.5
    if (( SECONDS - last >= interval )); then
      last=$SECONDS
      echo "build: $name: $(_report_line "$log" "$total"), $(_elapsed $((SECONDS - start)))" >&2
    fi
  done
  wait "$pid" || rc=$?
  return "$rc"
}

_report_line() {  # what `go build -v` (or `go list`) has done so far, from its log
  local log=$1 total=$2 done
  if [ "$total" = "-" ]; then echo "resolving packages"; return; fi
  # -v prints each package as it is compiled; "go: downloading" lines are modules being fetched.
  done=$(grep -cv -e '^go: ' -e '^#' -e ' ' "$log" 2>/dev/null || true)
  if [ "$total" -gt 0 ] && [ "$done" -ge "$total" ]; then echo "linking"
  else echo "$done/$total packages"; fi
}

# go_build_progress NAME OUT DIR PACKAGE [go build flags...]: `go build` of PACKAGE in DIR into OUT.
go_build_progress() {
  local name=$1 out=$2 dir=$3 package=$4; shift 4
  local start=$SECONDS log total
  log=$(mktemp)
  echo "build: $name: resolving packages, 0s" >&2
  # The packages that need compiling (not in Go's build cache): the total the -v lines count up to.
  if ! _run_reporting "$name" "$start" "$log.list" - -- \
      bash -c 'cd "$1" && shift && go list -deps -f "{{if .Stale}}stale{{end}}" "$@"' _ "$dir" "$@" "$package" \
      >"$log.count"; then
    grep -v '^go: downloading' "$log.list" >&2 || true
    rm -f "$log" "$log.list" "$log.count"
    echo "build: $name: failed to resolve its packages" >&2
    return 1
  fi
  total=$(grep -c stale "$log.count" || true)
  if ! _run_reporting "$name" "$start" "$log" "$total" -- \
      bash -c 'cd "$1" && shift && go build -v "$@"' _ "$dir" "$@" -o "$out" "$package"; then
    grep -v -e '^go: downloading' -e '^[^ ]*$' "$log" >&2 || true
    rm -f "$log" "$log.list" "$log.count"
    echo "build: $name: failed after $(_elapsed $((SECONDS - start)))" >&2
    return 1
  fi
  rm -f "$log" "$log.list" "$log.count"
  echo "build: $name: built in $(_elapsed $((SECONDS - start)))" >&2
}

# go_module_dir MODULE VERSION: the module's source directory in Go's module cache (downloaded if
# needed), for building a program of a module the way `go install MODULE/...@VERSION` does.
go_module_dir() {
  local json
  json=$(go mod download -json "$1@$2") || { echo "$json" >&2; return 1; }
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json"
}

# lock_build DIR NAME: one build into DIR at a time (two cold `make test` runs, or the demo beside the
# tests), held until the script exits; a line says so when it has to wait. The lock's descriptor (9)
# goes to the go commands too: a build left running by a killed script holds it until it ends.
lock_build() {
  exec 9>"$1/.lock"
  if ! flock -n 9; then
    echo "build: $2: waiting for another build of it, 0s" >&2
    flock 9
  fi
}
