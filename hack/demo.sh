#!/usr/bin/env bash
# make demo: the product page's twelve steps against `make up`, printed as
# the page prints them, each output checked against the page's (apart from
# AGE and the cluster IDs). Exits non-zero on the first difference.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source .flotilla/env
work=.flotilla/demo
mkdir -p "$work"
# shellcheck disable=SC1091
source hack/demo-lib.sh

if kubectl get app demo -n demo >/dev/null 2>&1; then
  echo "${dim}(an earlier demo's application exists: deleting it, and its Deployments in the clusters, first)${off}"
  kubectl delete app demo -n demo --timeout=60s >/dev/null || fail "could not delete the earlier demo application"
fi
kubectl get namespace demo >/dev/null 2>&1 || kubectl create namespace demo >/dev/null

step "1. app-meta.yaml: the Deployment the application references"
cat examples/seed/app-meta.yaml
step "2. Apply it to the hub (the Fleet instance): it only stores it"
show kubectl apply -f examples/seed/app-meta.yaml
expect 'deployment.apps/demo (created|configured|unchanged)'

step "3. The clusters the hub manages"
show kubectl get managedclusters
expect 'NAME +HUB ACCEPTED   MANAGED CLUSTER URLS   JOINED   AVAILABLE   AGE' \
       'managedcluster-[a-z0-9]+ +true +True +True +[0-9a-z]+' \
       'managedcluster-[a-z0-9]+ +true +True +True +[0-9a-z]+'
read -r c1 c2 <<<"$(printf '%s\n' "$out" | awk 'NR>1{print $1}' | tr '\n' ' ')"
sed "s/<clusterid1>/$c1/; s/<clusterid2>/$c2/" examples/seed/policy-topology.yaml > "$work/policy-topology.yaml"
echo "${dim}(policy-topology.yaml with <clusterid1>=$c1 and <clusterid2>=$c2, as the page says)${off}"
cat "$work/policy-topology.yaml"

step "4. Apply the topology policies"
show kubectl apply -f "$work/policy-topology.yaml"
expect 'policy.core.oam.dev/cluster-test (created|configured|unchanged)' 'policy.core.oam.dev/cluster-prod (created|configured|unchanged)'

step "5. workflow.yaml: deploy-test, then deploy-prod after approval (auto: false)"
cat examples/seed/workflow.yaml
step "6. Apply the workflow"
show kubectl apply -f examples/seed/workflow.yaml
expect 'workflow.core.oam.dev/deploy-demo (created|configured|unchanged)'

step "7. app.yaml: the application, release version1"
cat examples/seed/app.yaml
step "8. Apply the application"
began=$(date +%s.%N)
show kubectl apply -f examples/seed/app.yaml
expect 'application.core.oam.dev/demo created'

step "9. The application waits for approval"
until_ok 90 'workflowSuspending +true' kubectl get app demo -n demo || fail "the application did not reach workflowSuspending: $(kubectl get app demo -n demo -o jsonpath='{.status}')"
show kubectl get app demo -n demo
expect 'NAME   COMPONENT   TYPE          PHASE                HEALTHY   STATUS   AGE' \
       'demo   demo        ref-objects   workflowSuspending   true               [0-9a-z]+'

step "10. The test cluster runs it, production does not"
until_ok 60 '1/1' kubectl flotilla get deployment demo -n demo -m "$c1" || fail "the test cluster's Deployment is not 1/1"
tested=$(date +%s.%N)
show kubectl flotilla get deployment demo -n demo -m "$c1"
expect "Run on ManagedCluster $c1" 'NAME   READY   UP-TO-DATE   AVAILABLE   AGE' 'demo   1/1     1            1           [0-9a-z]+'
show kubectl flotilla get deployment demo -n demo -m "$c2"
expect "Run on ManagedCluster $c2" 'Error from server \(NotFound\): deployments.apps "demo" not found'

step "11. Approve: the workflow goes on"
resumed=$(date +%s.%N)
show kubectl flotilla workflow resume demo -n demo
expect 'Successfully resume workflow: demo'

step "12. Production now runs it"
until_ok 60 '1/1' kubectl flotilla get deployment demo -n demo -m "$c2" || fail "production's Deployment is not 1/1"
done_at=$(date +%s.%N)
show kubectl flotilla get deployment demo -n demo -m "$c2"
expect "Run on ManagedCluster $c2" 'NAME   READY   UP-TO-DATE   AVAILABLE   AGE' 'demo   1/1     1            1           [0-9a-z]+'
until_ok 30 ' running ' kubectl get app demo -n demo || fail "the application is not running"
show kubectl get app demo -n demo

echo
printf '%s\n' "${bold}The demo matches the product page.${off}" \
  "$(awk -v a="$began" -v b="$tested" -v c="$resumed" -v d="$done_at" 'BEGIN{printf "apply app.yaml -> test cluster 1/1: %.1fs; resume -> production 1/1: %.1fs", b-a, d-c}')"
cat <<MSG

Flotilla stays up. Explore it:
  source .flotilla/env
  kubectl get app demo -n demo -o yaml            # workflow steps, approvals, per-cluster health
  kubectl flotilla get deployment demo -n demo -m $c1,$c2
  kubectl get events -n demo                      # approvals recorded by the gate
  kubectl flotilla trace demo -n demo             # the release as one trace, from Jaeger (\$JAEGER_QUERY_URL)
  for m in \$FLOTILLA_METRICS; do curl -s "\${m#*=}"; done   # every service's Prometheus metrics
  ls .flotilla/logs                               # every process's log
Stop everything with: make down
MSG
