# A list from a file, e.g. a spreadsheet saved as "CSV UTF-8", into a ConfigMap that a campaign names
# (recipients.configMapRef: {name: customers-list, key: list.csv}). A Secret works the same way:
# kubectl create secret generic customers-list --from-file=list.csv=...
kubectl create configmap customers-list --from-file=list.csv=examples/campaigns/customers.csv
