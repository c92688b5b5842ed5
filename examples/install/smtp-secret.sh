# The relay's credentials, in each namespace whose pools send through it (keys: username, password).
kubectl -n mail create secret generic smtp-auth \
  --from-literal=username=mailer@acme.example --from-literal=password='the relay password'
