"""kopf handlers of the pool kind (thin: each hands its work to a domain module)."""
