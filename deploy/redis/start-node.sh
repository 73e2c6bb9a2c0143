#!/bin/sh
# Start one Redis node with ACL users made from the secrets in the environment:
#   admin  everything (replication, `redis-cli --cluster`, backups)      REDIS_ADMIN_PASSWORD
#   maos   MAOS's own keys only: ~maos:*, no admin or dangerous command  REDIS_MAOS_PASSWORD
#   keda   reads the work queue's backlog (KEDA's scaler), if set         REDIS_KEDA_PASSWORD
#   default  off
# The users file and the replication password go to REDIS_RUN_DIR (a tmpfs in compose), never
# to the data volume; passwords are stored as SHA-256 in the users file.
# Usage: start-node.sh [redis-server options...]   (e.g. --cluster-announce-hostname redis-1)
set -eu

: "${REDIS_ADMIN_PASSWORD:?set REDIS_ADMIN_PASSWORD (deploy/make-secrets.sh writes it)}"
: "${REDIS_MAOS_PASSWORD:?set REDIS_MAOS_PASSWORD (deploy/make-secrets.sh writes it)}"
conf="${REDIS_CONF:-/usr/local/etc/redis/redis.conf}"
run_dir="${REDIS_RUN_DIR:-/run/redis}"
# The official image's entrypoint drops root for the redis user; empty: run redis-server as is.
entrypoint="${REDIS_ENTRYPOINT-docker-entrypoint.sh}"

sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

umask 077
mkdir -p "$run_dir"
{
    echo "user default off"
    echo "user admin on #$(sha "$REDIS_ADMIN_PASSWORD") ~* &* +@all"
    # MAOS: streams, hashes, strings, Lua scripts, SCAN on its own keys; INFO and the cluster
    # topology for its client. No KEYS, FLUSH*, CONFIG, DEBUG, MONITOR, ACL, CLIENT KILL.
    echo "user maos on #$(sha "$REDIS_MAOS_PASSWORD") ~maos:* resetchannels +@all -@admin -@dangerous +info +cluster|slots +cluster|shards +cluster|nodes +cluster|info +cluster|myid"
    if [ -n "${REDIS_KEDA_PASSWORD:-}" ]; then
        # The work queue `maos:assignments` is the Redis stream maos:x:maos:assignments.
        echo "user keda on #$(sha "$REDIS_KEDA_PASSWORD") ~maos:x:maos:assignments resetchannels -@all +auth +hello +ping +client|setname +command +readonly +select +info +cluster|slots +cluster|shards +cluster|nodes +xinfo|groups +xinfo|stream +xpending +xlen"
    fi
} > "$run_dir/users.acl"
{
    echo "aclfile $run_dir/users.acl"
    echo "masteruser admin"
    echo "masterauth $REDIS_ADMIN_PASSWORD"
} > "$run_dir/auth.conf"
if [ "$(id -u)" = 0 ] && id redis >/dev/null 2>&1; then
    chown -R redis "$run_dir"
fi

exec ${entrypoint} redis-server "$conf" --include "$run_dir/auth.conf" "$@"
