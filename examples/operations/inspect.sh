kubectl get sp,mc                                          # pools and campaigns of the namespace
kubectl describe sp default                                # Ready and Degraded, with the reason
kubectl get pods -l mailtrain.dev/pool=default -o wide     # the pool's sender pods
kubectl logs -l mailtrain.dev/pool=default -c sender --prefix --tail=50
kubectl get events --field-selector type=Warning           # what went wrong, once per change
kubectl -n mailtrain-system logs -l app.kubernetes.io/component=operator --prefix --tail=100
