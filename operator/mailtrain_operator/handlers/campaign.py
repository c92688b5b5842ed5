"""kopf handlers of the campaign kind (thin: each hands its work to a domain module)."""
