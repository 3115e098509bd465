#!/bin/sh
# Writes the Secret redis-auth, with fresh random values for every key the manifests read,
# to standard output:
#   sh deploy/kubernetes/make-secret.sh | kubectl apply -n redis -f -
# Keys (docs/deploy.md, "Security"):
#   password              applications (Redis' `default` user: no admin or dangerous commands)
#   replication-password  replicas syncing from the master (user `replication`)
#   sidecar-password      the sidecar (user `sidecar`: exactly the commands it sends)
#   admin-password        operators (user `admin`: everything)
#   auth.conf             what Redis reads: those users and masteruser/masterauth
#   admin-token           POST /switchover on the sidecars and the switchover command
#   peer-key              signs the failsafe messages between sidecars
# The sidecar refuses to start with a credential shorter than 16 characters or a placeholder
# from an example. The users' rules are the ones in crates/redis-k8s-election/src/
# credentials.rs (a test checks that both write the same auth.conf).
set -eu
hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
b64() { printf '%s' "$1" | base64 | tr -d '\n'; }
app=$(hex 24)
repl=$(hex 24)
sidecar=$(hex 24)
admin=$(hex 24)
auth_conf() {
  printf 'user default reset on >%s ~* &* +@all -@admin -@dangerous +info +role\n' "$app"
  printf 'user replication reset on >%s resetchannels -@all +psync +replconf\n' "$repl"
  printf 'user sidecar reset on >%s resetchannels -@all +info +config|get +config|set +client|kill +client|pause +client|unpause +replicaof %%RW~redis-k8s-election:* +get +set\n' "$sidecar"
  printf 'user admin reset on >%s ~* &* +@all\n' "$admin"
  printf 'masteruser replication\nmasterauth %s\n' "$repl"
}
cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: ${SECRET_NAME:-redis-auth}
type: Opaque
data:
  password: $(b64 "$app")
  replication-password: $(b64 "$repl")
  sidecar-password: $(b64 "$sidecar")
  admin-password: $(b64 "$admin")
  auth.conf: $(auth_conf | base64 | tr -d '\n')
  admin-token: $(b64 "$(hex 24)")
  peer-key: $(b64 "$(hex 32)")
YAML
