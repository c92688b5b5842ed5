# In a checkout of the new release: CRDs first (helm upgrade leaves them alone), then the chart.
kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for=condition=Established crd/senderpools.mailtrain.dev crd/mailcampaigns.mailtrain.dev
helm upgrade mailtrain-operator helm/mailtrain-operator -n mailtrain-system --reset-then-reuse-values
kubectl -n mailtrain-system rollout status deployment/mailtrain-operator
