# From a checkout of this repository. The namespaces in watchNamespaces must exist first.
kubectl create namespace mail
kubectl create namespace news
helm install mailtrain-operator helm/mailtrain-operator -n mailtrain-system --create-namespace \
  -f examples/install/production.yaml -f examples/install/monitoring.yaml
kubectl -n mailtrain-system rollout status deployment/mailtrain-operator
kubectl -n mailtrain-system rollout status statefulset/mailtrain-operator-redis
