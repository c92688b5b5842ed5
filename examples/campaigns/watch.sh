kubectl apply -f examples/campaigns/hello.yaml
kubectl get mc                           # NAME PHASE SENT TOTAL PROGRESS AGE, of every campaign
kubectl get mc hello -w                  # follow one campaign
kubectl describe mc hello                # conditions and Events: Started, Completed, warnings
kubectl wait --for=condition=Complete mc/hello --timeout=1h
kubectl get mc hello -o jsonpath='{.status.sent} sent, {.status.failed} failed, {.status.invalid} invalid{"\n"}'
