#!/usr/bin/env bash
# Generates hack/testbed/go.mod: a module that requires k8s.io/kubernetes and
# pins every staging module kubernetes replaces with a local path
# (`=> ./staging/src/...`) to its published v0.X.Y tag, so the Kubernetes
# commands build with `go build` outside the kubernetes repository.
set -euo pipefail
cd "$(dirname "$0")"
K8S_VERSION="${K8S_VERSION:-v1.37.2}"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
export GOFLAGS=-mod=mod

modfile="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
[ -f "$modfile" ] || { echo "gen-gomod: no go.mod for k8s.io/kubernetes@${K8S_VERSION}" >&2; exit 1; }

rm -f go.mod go.sum
go mod init github.com/flotilla-dev/flotilla/hack/testbed >/dev/null 2>&1
go mod edit -go=1.26
n=0
for m in $(awk '/=> \.\/staging\/src\//{print $1}' "$modfile"); do
  go mod edit -replace="${m}=${m}@${STAGING_VERSION}"
  n=$((n + 1))
done
echo "gen-gomod: ${n} staging modules pinned to ${STAGING_VERSION}" >&2
go mod edit -require="k8s.io/kubernetes@${K8S_VERSION}"
# etcd at the version kubernetes pins.
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2}' "$modfile")"
go mod edit -require="go.etcd.io/etcd/server/v3@${etcd_version}"
for t in k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
         k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl; do
  go mod edit -tool="$t"
done
go mod tidy
