#!/bin/sh
# Writes the Secret redis-auth, with fresh random values for every key the manifests read,
# to standard output:
#   sh deploy/kubernetes/make-secret.sh | kubectl apply -n redis -f -
# Keys: password (clients and the sidecar), auth.conf (what Redis reads: requirepass and
# masterauth, the same password), admin-token (POST /switchover and the switchover command),
# peer-key (signs the failsafe messages between sidecars). The sidecar refuses to start with
# a credential shorter than 16 characters or a placeholder from an example.
# Rotation: docs/deploy.md, "Security".
set -eu
hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
pw=$(hex 24)
b64() { printf '%s' "$1" | base64 | tr -d '\n'; }
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: ${SECRET_NAME:-redis-auth}
type: Opaque
data:
  password: $(b64 "$pw")
  auth.conf: $(printf 'requirepass %s\nmasterauth %s\n' "$pw" "$pw" | base64 | tr -d '\n')
  admin-token: $(b64 "$(hex 24)")
  peer-key: $(b64 "$(hex 32)")
YAML
