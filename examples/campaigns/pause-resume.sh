kubectl patch mc winter-sale --type=merge -p '{"spec":{"suspend":true}}'    # Paused within seconds
kubectl patch mc winter-sale --type=merge -p '{"spec":{"suspend":false}}'   # resumes where it stopped
kubectl patch mc spring-sale --type=merge -p '{"spec":{"suspend":false}}'   # a prepared campaign: sends now
kubectl patch mc winter-sale --type=merge -p '{"spec":{"priority":50}}'     # moves it in its pool's line
kubectl delete mc winter-sale            # stops its sending and removes it from Redis
