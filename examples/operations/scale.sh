kubectl scale sp default --replicas=4             # sets spec.queue.processes: 4 sender pods
kubectl get sp default                            # PROCESSES READY MAX-PARALLEL ACTIVE
kubectl patch sp default --type=merge -p '{"spec":{"queue":{"maxParallelCampaigns":2}}}'   # no restart
kubectl scale sp default --replicas=0             # stops sending; campaigns wait, nothing is lost
