# A Redis of your own, with a password and TLS (rediss://): the whole URL goes in a Secret.
kubectl -n mail create secret generic redis-url \
  --from-literal=url='rediss://:the-redis-password@redis.acme.example:6380/0'
