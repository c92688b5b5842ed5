kubectl -n mailtrain-system get pods -l app.kubernetes.io/name=mailtrain-operator -o wide
kubectl -n mailtrain-system logs -l app.kubernetes.io/component=operator --tail=-1 --prefix | grep "Resuming operations"
kubectl get mc -A -o custom-columns=NS:.metadata.namespace,NAME:.metadata.name,PHASE:.status.phase,DONE:.status.checkpoint.completedChunks
kubectl get events -A --field-selector reason=Republished      # campaigns published again after a Redis loss
