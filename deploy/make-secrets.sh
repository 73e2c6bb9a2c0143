#!/usr/bin/env bash
# Write the secrets deploy/compose.yaml reads into deploy/secrets/ (0700), once:
#   maos.env                 MAOS_KEY, MAOS_STORE (with the `maos` Redis user's password),
#                            MAOS_DASHBOARD_TOKEN, ANTHROPIC_API_KEY (empty: fill it in)
#   redis.env                REDIS_ADMIN_PASSWORD, REDIS_MAOS_PASSWORD (deploy/redis/start-node.sh)
#   dashboard_token          the dashboard token again, for Prometheus (credentials_file)
#   grafana_admin_password
# Existing files are kept: MAOS_KEY encrypts the checkpoints and the values in Redis, so a
# new one would make them unreadable. Back the folder up (docs/deploy.md#keys).
set -euo pipefail
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
chmod 700 secrets

random() { python3 -c "import secrets; print(secrets.token_hex($1))"; }

if [[ ! -e secrets/redis.env ]]; then
    printf 'REDIS_ADMIN_PASSWORD=%s\nREDIS_MAOS_PASSWORD=%s\n' "$(random 24)" "$(random 24)" > secrets/redis.env
fi
maos_password="$(sed -n 's/^REDIS_MAOS_PASSWORD=//p' secrets/redis.env)"
if [[ ! -e secrets/dashboard_token ]]; then
    random 32 > secrets/dashboard_token
fi
# Prometheus (user nobody) reads it through a bind mount; the 0700 folder keeps other local
# users out.
chmod 644 secrets/dashboard_token
if [[ ! -e secrets/grafana_admin_password ]]; then
    random 16 > secrets/grafana_admin_password
fi
chmod 644 secrets/grafana_admin_password
if [[ ! -e secrets/maos.env ]]; then
    {
        echo "MAOS_KEY=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
        echo "MAOS_STORE=redis+cluster://maos:${maos_password}@redis-1:6379"
        echo "MAOS_DASHBOARD_TOKEN=$(cat secrets/dashboard_token)"
        echo "ANTHROPIC_API_KEY="
    } > secrets/maos.env
fi
echo "deploy/secrets/ ready; set ANTHROPIC_API_KEY in deploy/secrets/maos.env for Claude tasks"
