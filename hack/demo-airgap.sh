#!/usr/bin/env bash
# make demo-airgap: the product page's scenario with production at an
# air-gapped site whose link to the hub is cut at the approval. The approval
# is accepted; production stays empty and the hub says why; the link
# returns; production gets the release and the application runs. Each step
# is printed and checked; exits non-zero on the first difference.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source .flotilla/env
work=.flotilla/demo
mkdir -p "$work"
# shellcheck disable=SC1091
source hack/demo-lib.sh
# The link is restored however the demo ends.
trap 'hack/link.sh up >/dev/null 2>&1 || true' EXIT

if kubectl get app demo -n demo >/dev/null 2>&1; then
  echo "${dim}(an earlier demo's application exists: deleting it, and its Deployments in the clusters, first)${off}"
  kubectl delete app demo -n demo --timeout=60s >/dev/null || fail "could not delete the earlier demo application"
fi
kubectl get namespace demo >/dev/null 2>&1 || kubectl create namespace demo >/dev/null
read -r c1 c2 <<<"$(kubectl get managedclusters -o name | sed 's|.*/||' | tr '\n' ' ')"
[ "$c2" = "$FLOTILLA_SITE_CLUSTERS" ] || fail "production ($c2) is not the cluster at site $FLOTILLA_SITE ($FLOTILLA_SITE_CLUSTERS)"

step "1. Production ($c2) is at site $FLOTILLA_SITE: its agent talks only to the site's leaf node"
show kubectl get managedcluster "$c2" -L flotilla.dev/site
expect 'NAME +HUB ACCEPTED +MANAGED CLUSTER URLS +JOINED +AVAILABLE +AGE +SITE' \
       "$c2 +true +True +True +[0-9a-z]+ +$FLOTILLA_SITE"

step "2. The product page's objects, policies, workflow and application"
sed "s/<clusterid1>/$c1/; s/<clusterid2>/$c2/" examples/seed/policy-topology.yaml > "$work/policy-topology.yaml"
show kubectl apply -f examples/seed/app-meta.yaml -f "$work/policy-topology.yaml" -f examples/seed/workflow.yaml
expect 'deployment.apps/demo (created|configured|unchanged)' \
       'policy.core.oam.dev/cluster-test (created|configured|unchanged)' 'policy.core.oam.dev/cluster-prod (created|configured|unchanged)' \
       'workflow.core.oam.dev/deploy-demo (created|configured|unchanged)'
show kubectl apply -f examples/seed/app.yaml
expect 'application.core.oam.dev/demo created'

step "3. The test cluster runs it; the application waits for approval"
until_ok 90 'workflowSuspending +true' kubectl get app demo -n demo || fail "the application did not reach workflowSuspending"
until_ok 60 '1/1' kubectl flotilla get deployment demo -n demo -m "$c1" || fail "the test cluster's Deployment is not 1/1"
show kubectl get app demo -n demo
expect 'NAME   COMPONENT   TYPE          PHASE                HEALTHY   STATUS   AGE' \
       'demo   demo        ref-objects   workflowSuspending   true               [0-9a-z]+'

step "4. Cut the link between site $FLOTILLA_SITE and the hub"
show hack/link.sh down
expect "the link from site $FLOTILLA_SITE to the hub is down since .*"

step "5. The hub shows production unavailable, and why"
until_ok 30 'Unknown' kubectl get managedcluster "$c2" || fail "production is still shown available"
show kubectl get managedcluster "$c2"
expect 'NAME +HUB ACCEPTED +MANAGED CLUSTER URLS +JOINED +AVAILABLE +AGE' "$c2 +true +True +Unknown +[0-9a-z]+"
show kubectl get managedcluster "$c2" -o jsonpath='{range .status.conditions[?(@.type=="ManagedClusterConditionAvailable")]}{.reason}: {.message}{end}'
expect "SiteLinkDown: the link from site $FLOTILLA_SITE to the hub is down since .*"

step "6. Approve while production is cut off: the approval is accepted"
show kubectl flotilla workflow resume demo -n demo
expect 'Successfully resume workflow: demo'

step "7. Production is still empty (asked in the cluster itself), and the application is not running"
sleep 3
show kubectl --kubeconfig ".flotilla/kubeconfig/$c2" get deployment demo -n demo
expect 'Error from server \(NotFound\): (deployments.apps|namespaces) "demo" not found'
show kubectl get app demo -n demo -o jsonpath='{.status.status}{"\n"}{range .status.services[?(@.cluster=="'"$c2"'")]}{.cluster}: healthy={.healthy} {.message}{end}'
expect 'runningWorkflow' "$c2: healthy=false health unknown: cluster $c2 is unavailable since .* \\(SiteLinkDown\\)"

step "8. The link comes back"
show hack/link.sh up
expect "the link from site $FLOTILLA_SITE to the hub is up since .*"
back=$(date +%s.%N)

step "9. Production gets the release, and the application runs"
until_ok 60 '1/1' kubectl flotilla get deployment demo -n demo -m "$c2" || fail "production's Deployment is not 1/1 after the link returned"
deployed=$(date +%s.%N)
show kubectl flotilla get deployment demo -n demo -m "$c2"
expect "Run on ManagedCluster $c2" 'NAME   READY   UP-TO-DATE   AVAILABLE   AGE' 'demo   1/1     1            1           [0-9a-z]+'
until_ok 60 ' running ' kubectl get app demo -n demo || fail "the application is not running after the link returned"
running=$(date +%s.%N)
show kubectl get app demo -n demo
expect 'NAME   COMPONENT   TYPE          PHASE     HEALTHY   STATUS   AGE' \
       'demo   demo        ref-objects   running   true               [0-9a-z]+'
show kubectl get managedcluster "$c2"
expect 'NAME +HUB ACCEPTED +MANAGED CLUSTER URLS +JOINED +AVAILABLE +AGE' "$c2 +true +True +True +[0-9a-z]+"

echo
printf '%s\n' "${bold}The air-gapped demo passed.${off}" \
  "$(awk -v a="$back" -v b="$deployed" -v c="$running" 'BEGIN{printf "link up -> production 1/1: %.1fs; link up -> application running: %.1fs", b-a, c-a}')"
