#!/bin/sh
# Join the nodes in REDIS_NODES (host:port, space separated) into one Redis Cluster with one
# replica per primary, once: a cluster that is already formed is left as it is. Exit 0 when
# every node reports cluster_state:ok.
set -eu

: "${REDIS_ADMIN_PASSWORD:?set REDIS_ADMIN_PASSWORD}"
: "${REDIS_NODES:?set REDIS_NODES, e.g. \"redis-1:6379 redis-2:6379 ...\"}"
export REDISCLI_AUTH="$REDIS_ADMIN_PASSWORD"
timeout_s="${REDIS_CREATE_TIMEOUT_S:-120}"

cli() { node="$1"; shift; redis-cli --no-auth-warning --user admin -h "${node%:*}" -p "${node##*:}" "$@"; }
field() { cli "$1" cluster info | tr -d '\r' | sed -n "s/^$2://p"; }

deadline=$(( $(date +%s) + timeout_s ))
for node in $REDIS_NODES; do
    until [ "$(cli "$node" ping 2>/dev/null)" = PONG ]; do
        if [ "$(date +%s)" -ge "$deadline" ]; then echo "node $node does not answer" >&2; exit 1; fi
        sleep 1
    done
done

first="${REDIS_NODES%% *}"
count=$(echo "$REDIS_NODES" | wc -w)
if [ "$(field "$first" cluster_known_nodes)" = 1 ]; then
    echo "creating the cluster of $count nodes"
    # shellcheck disable=SC2086
    redis-cli --no-auth-warning --user admin --cluster create $REDIS_NODES --cluster-replicas 1 --cluster-yes
else
    echo "the cluster exists ($(field "$first" cluster_known_nodes) nodes known to $first)"
fi

for node in $REDIS_NODES; do
    until [ "$(field "$node" cluster_state)" = ok ] && [ "$(field "$node" cluster_known_nodes)" = "$count" ]; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "node $node: cluster not ok: $(cli "$node" cluster info | tr -d '\r' | tr '\n' ' ')" >&2
            exit 1
        fi
        sleep 1
    done
done
echo "cluster ok: $count nodes"
