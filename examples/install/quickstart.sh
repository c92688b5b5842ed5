kubectl create namespace mail
helm install mailtrain-operator helm/mailtrain-operator -n mailtrain-system --create-namespace -f examples/install/quickstart.yaml
kubectl -n mail create secret generic smtp-auth --from-literal=username=USER --from-literal=password=PASS
kubectl -n mail apply -f examples/pools/default.yaml -f examples/campaigns/hello.yaml
kubectl -n mail wait --for=condition=Complete mc/hello --timeout=10m
