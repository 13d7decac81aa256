#!/usr/bin/env bash
# A throwaway PostgreSQL server for the PostgreSQL backend tests.
#
# Two ways to use it:
#
#   Sourced (what .ci/run does):
#       source .ci/postgres.sh
#       snapstore_pg_start || exit 1     # exports SNAPSTORE_TEST_POSTGRES_URL and SNAPSTORE_PG_DIR
#       trap snapstore_pg_stop EXIT      # stop the server and delete its files when the caller exits
#
#   Run (e.g. by hand):
#       pg_env=$(bash .ci/postgres.sh start) || exit 1   # prints "export ..." lines on stdout
#       eval "$pg_env"
#       ...run the tests...
#       bash .ci/postgres.sh stop                        # uses SNAPSTORE_PG_DIR from the environment
#
# What start does: finds the server binaries (pg_ctl/initdb on PATH, else the newest
# /usr/lib/postgresql/*/bin; installs the Debian "postgresql" package when neither is
# there), creates a cluster in a fresh temporary folder owned by a non-root user
# (PostgreSQL refuses to run as root: it uses the "postgres" system user, or creates
# "snapstore-pg"), starts it on 127.0.0.1 on a free port (54329 or the next free one;
# SNAPSTORE_PG_PORT overrides), trust authentication, fsync off (the data is thrown
# away), waits for pg_isready, creates the database "snapstore_test" and checks that
# it answers. It exits (returns) non-zero with a message on stderr when any step fails.
#
# If SNAPSTORE_TEST_POSTGRES_URL is already set, start starts nothing: it checks that
# server answers and fails if it does not.
#
# Progress messages go to stderr; only the "export" lines go to stdout.

_snapstore_pg_log() { echo "postgres.sh: $*" >&2; }

# Print the folder holding initdb, pg_ctl and postgres, or nothing.
_snapstore_pg_find_bindir() {
    local dir candidate
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dir=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
        if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ]; then
            echo "$dir"
            return 0
        fi
    fi
    # newest version first
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$candidate/initdb" ] && [ -x "$candidate/pg_ctl" ] && [ -x "$candidate/postgres" ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

_snapstore_pg_install() {
    if [ "$(id -u)" != 0 ]; then
        _snapstore_pg_log "PostgreSQL server binaries not found and not root: install the 'postgresql' package (Debian/Ubuntu: apt-get install postgresql) or put pg_ctl and initdb on PATH"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        _snapstore_pg_log "PostgreSQL server binaries not found and there is no apt-get to install them"
        return 1
    fi
    _snapstore_pg_log "PostgreSQL server binaries not found: installing the 'postgresql' package"
    # The package may try to start its own cluster on 5432; ours uses another port.
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }; then
        _snapstore_pg_log "apt-get install postgresql failed"
        return 1
    fi
}

# Run a command as the server's user (a no-op wrapper when we are not root).
_snapstore_pg_as_user() {
    if [ "$(id -u)" = 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u "$SNAPSTORE_PG_USER" -- "$@"
        else
            su -s /bin/sh "$SNAPSTORE_PG_USER" -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

_snapstore_pg_port_busy() {
    # A successful connect means something listens there.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

snapstore_pg_start() {
    local bindir tmp port url last_port i

    if [ -n "${SNAPSTORE_TEST_POSTGRES_URL:-}" ]; then
        _snapstore_pg_log "SNAPSTORE_TEST_POSTGRES_URL is already set: checking it instead of starting a server"
        bindir=$(_snapstore_pg_find_bindir) || bindir=""
        local psql_bin="${bindir:+$bindir/}psql"
        if ! command -v "$psql_bin" >/dev/null 2>&1; then
            _snapstore_pg_log "no psql to check SNAPSTORE_TEST_POSTGRES_URL with; trusting it"
        elif ! PGCONNECT_TIMEOUT=10 "$psql_bin" "$SNAPSTORE_TEST_POSTGRES_URL" -XAtqc 'SELECT 1' >/dev/null; then
            _snapstore_pg_log "ERROR: the server at SNAPSTORE_TEST_POSTGRES_URL cannot be reached"
            return 1
        fi
        echo "export SNAPSTORE_TEST_POSTGRES_URL='$SNAPSTORE_TEST_POSTGRES_URL'"
        return 0
    fi

    if ! bindir=$(_snapstore_pg_find_bindir); then
        _snapstore_pg_install || return 1
        if ! bindir=$(_snapstore_pg_find_bindir); then
            _snapstore_pg_log "ERROR: installed 'postgresql' but still found no initdb/pg_ctl/postgres (looked on PATH and in /usr/lib/postgresql/*/bin)"
            return 1
        fi
    fi
    _snapstore_pg_log "using PostgreSQL binaries in $bindir ($("$bindir/postgres" --version 2>/dev/null))"

    # PostgreSQL will not run as root: use a plain system user.
    if [ "$(id -u)" = 0 ]; then
        if [ -z "${SNAPSTORE_PG_USER:-}" ]; then
            if id postgres >/dev/null 2>&1; then
                SNAPSTORE_PG_USER=postgres
            else
                SNAPSTORE_PG_USER=snapstore-pg
                if ! id "$SNAPSTORE_PG_USER" >/dev/null 2>&1; then
                    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$SNAPSTORE_PG_USER" >&2 || {
                        _snapstore_pg_log "ERROR: cannot create the system user $SNAPSTORE_PG_USER"
                        return 1
                    }
                fi
            fi
        fi
    else
        SNAPSTORE_PG_USER=$(id -un)
    fi
    export SNAPSTORE_PG_USER

    tmp=$(mktemp -d "${TMPDIR:-/tmp}/snapstore-pg.XXXXXX") || {
        _snapstore_pg_log "ERROR: cannot create a temporary folder"
        return 1
    }
    chmod 755 "$tmp"
    if [ "$(id -u)" = 0 ]; then
        chown "$SNAPSTORE_PG_USER" "$tmp" || { _snapstore_pg_log "ERROR: cannot chown $tmp"; rm -rf "$tmp"; return 1; }
    fi
    export SNAPSTORE_PG_DIR="$tmp"
    export SNAPSTORE_PG_BINDIR="$bindir"

    # The server's user may not be allowed into the caller's folder (e.g. /root/...).
    if ! (cd "$tmp" && _snapstore_pg_as_user "$bindir/initdb" --pgdata="$tmp/data" --username=postgres \
            --auth=trust --encoding=UTF8 --locale=C --no-sync >"$tmp/initdb.log" 2>&1); then
        _snapstore_pg_log "ERROR: initdb failed:"
        cat "$tmp/initdb.log" >&2
        rm -rf "$tmp"
        unset SNAPSTORE_PG_DIR
        return 1
    fi

    port=${SNAPSTORE_PG_PORT:-54329}
    last_port=$((port + 50))
    while [ "$port" -le "$last_port" ] && _snapstore_pg_port_busy "$port"; do
        port=$((port + 1))
    done
    if [ "$port" -gt "$last_port" ]; then
        _snapstore_pg_log "ERROR: no free port between ${SNAPSTORE_PG_PORT:-54329} and $last_port"
        rm -rf "$tmp"
        unset SNAPSTORE_PG_DIR
        return 1
    fi

    if ! (cd "$tmp" && _snapstore_pg_as_user "$bindir/pg_ctl" --pgdata="$tmp/data" --log="$tmp/postgres.log" \
            --wait --timeout=60 \
            -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$tmp -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            start >"$tmp/pg_ctl.log" 2>&1); then
        _snapstore_pg_log "ERROR: the PostgreSQL server did not start:"
        cat "$tmp/pg_ctl.log" "$tmp/postgres.log" >&2 2>/dev/null
        snapstore_pg_stop
        return 1
    fi
    export SNAPSTORE_PG_PORT_USED="$port"

    local isready="$bindir/pg_isready"
    [ -x "$isready" ] || isready=pg_isready
    i=0
    until "$isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; do
        i=$((i + 1))
        if [ "$i" -ge 60 ]; then
            _snapstore_pg_log "ERROR: the PostgreSQL server on 127.0.0.1:$port is not ready after 30 s:"
            tail -n 30 "$tmp/postgres.log" >&2 2>/dev/null
            snapstore_pg_stop
            return 1
        fi
        sleep 0.5
    done

    local psql_bin="$bindir/psql"
    [ -x "$psql_bin" ] || psql_bin=psql
    if ! "$psql_bin" -XAtq -h 127.0.0.1 -p "$port" -U postgres -d postgres \
            -c 'CREATE DATABASE snapstore_test' >/dev/null; then
        _snapstore_pg_log "ERROR: cannot create the database snapstore_test"
        snapstore_pg_stop
        return 1
    fi
    url="postgresql://postgres@127.0.0.1:$port/snapstore_test"
    if ! PGCONNECT_TIMEOUT=10 "$psql_bin" "$url" -XAtqc 'SELECT 1' >/dev/null; then
        _snapstore_pg_log "ERROR: the server at $url cannot be reached"
        snapstore_pg_stop
        return 1
    fi

    export SNAPSTORE_TEST_POSTGRES_URL="$url"
    printf 'export SNAPSTORE_TEST_POSTGRES_URL=%q\n' "$SNAPSTORE_TEST_POSTGRES_URL" >"$tmp/env"
    printf 'export SNAPSTORE_PG_DIR=%q\n' "$tmp" >>"$tmp/env"
    printf 'export SNAPSTORE_PG_USER=%q\n' "$SNAPSTORE_PG_USER" >>"$tmp/env"
    printf 'export SNAPSTORE_PG_BINDIR=%q\n' "$bindir" >>"$tmp/env"
    _snapstore_pg_log "PostgreSQL is up: $url (files in $tmp; stop with snapstore_pg_stop or 'bash .ci/postgres.sh stop')"
    cat "$tmp/env"
}

# Stop the server started by snapstore_pg_start and delete its folder. Safe to call twice.
snapstore_pg_stop() {
    local dir="${SNAPSTORE_PG_DIR:-}"
    [ -n "$dir" ] || return 0
    case "$dir" in
        */snapstore-pg.*) ;;
        *) _snapstore_pg_log "refusing to remove unexpected SNAPSTORE_PG_DIR=$dir"; return 1 ;;
    esac
    if [ -f "$dir/data/postmaster.pid" ]; then
        local bindir="${SNAPSTORE_PG_BINDIR:-}"
        [ -n "$bindir" ] || bindir=$(_snapstore_pg_find_bindir) || bindir=""
        if [ -n "$bindir" ]; then
            SNAPSTORE_PG_USER=${SNAPSTORE_PG_USER:-$(stat -c %U "$dir")}
            (cd "$dir" && _snapstore_pg_as_user "$bindir/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >/dev/null 2>&1) ||
                _snapstore_pg_log "warning: pg_ctl stop failed"
        fi
    fi
    rm -rf "$dir"
    unset SNAPSTORE_PG_DIR
    # Only forget the URL if it pointed at the server just stopped.
    if [ -n "${SNAPSTORE_PG_PORT_USED:-}" ]; then
        unset SNAPSTORE_TEST_POSTGRES_URL SNAPSTORE_PG_PORT_USED
    fi
    return 0
}

# Run as a script: "start" prints the export lines, "stop" stops the server of SNAPSTORE_PG_DIR.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-start}" in
        start)
            # A server started by a script that exits must outlive it: no trap here.
            snapstore_pg_start || exit 1
            ;;
        stop)
            snapstore_pg_stop || exit 1
            ;;
        *)
            echo "usage: $0 [start|stop]" >&2
            exit 2
            ;;
    esac
fi
