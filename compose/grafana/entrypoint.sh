#!/bin/sh
# Grafana's admin password, set before Grafana starts, then `exec "$@"` (the image's /run.sh).
#   GRAFANA_ADMIN_PASSWORD set and not empty -> that password.
#   otherwise -> a random one, generated at first start into $GF_PATHS_DATA/admin-password (the
#   grafana-data volume, mode 600) and reused on every later start. Read it with
#   `docker compose exec grafana cat /var/lib/grafana/admin-password`.
# Grafana applies the password when it creates its database (the first start of the volume); to change
# it later use `grafana cli admin reset-admin-password` or remove the volume.
set -eu

data_dir=${GF_PATHS_DATA:-/var/lib/grafana}
secret_file=$data_dir/admin-password

if [ -n "${GRAFANA_ADMIN_PASSWORD:-}" ]; then
    GF_SECURITY_ADMIN_PASSWORD=$GRAFANA_ADMIN_PASSWORD
    export GF_SECURITY_ADMIN_PASSWORD
    echo "subagent-entrypoint: Grafana admin password taken from GRAFANA_ADMIN_PASSWORD"
else
    if [ ! -s "$secret_file" ]; then
        umask 077
        password=$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24)
        if [ "${#password}" -ne 24 ]; then
            echo "subagent-entrypoint: could not generate a password" >&2
            exit 1
        fi
        printf '%s' "$password" >"$secret_file.tmp"
        mv "$secret_file.tmp" "$secret_file"
        echo "subagent-entrypoint: generated the Grafana admin password: $password"
    fi
    unset GF_SECURITY_ADMIN_PASSWORD
    GF_SECURITY_ADMIN_PASSWORD__FILE=$secret_file
    export GF_SECURITY_ADMIN_PASSWORD__FILE
    echo "subagent-entrypoint: Grafana admin password kept in $secret_file" \
        "(docker compose exec grafana cat $secret_file)"
fi
unset GRAFANA_ADMIN_PASSWORD

exec "$@"
