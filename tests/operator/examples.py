"""Example SenderPools and MailCampaigns: a minimal valid one, one with every field, and edits of them."""

from __future__ import annotations

import copy
import json
from typing import Any

Json = dict[str, Any]
API_VERSION = "mailtrain.dev/v1alpha1"


def campaign(name: str = "welcome", **spec: Any) -> Json:
    body: Json = {
        "from": {"address": "news@acme.example"},
        "subject": "Hello {{ name }}",
        "text": "Hi {{ name }}",
        "recipients": {"inline": [{"email": "a@b.example"}]},
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "MailCampaign",
        "metadata": {"name": name},
        "spec": body | spec,
    }


def full_campaign(name: str = "everything") -> Json:
    """Every spec field set (one recipient source only, as the CRD requires)."""
    return campaign(
        name,
        senderPool="newsletters",
        **{"from": {"address": "news@acme.example", "name": "Acme Nachrichten aus Köln"}},
        subject="Grüße, {{ name }}!\t{{ vars.city }}",
        text="Hallo {{ name }}",
        html="<p>Hallo {{ name }}</p>",
        headers={"X-Campaign": "winter-2026", "Precedence": "bulk"},
        listId="newsletter.acme.example",
        listUnsubscribe={
            "url": "https://acme.example/u/{{ token }}?c={{ vars.city }}",
            "mailto": "unsubscribe@acme.example",
            "oneClick": True,
        },
        recipients={
            "inline": [
                {"email": "anna@example.org", "name": "Anna", "vars": {"city": "Köln", "n": 3}},
                {"email": "ben@example.org"},
            ]
        },
        startAt="2026-12-01T09:00:00Z",
        suspend=True,
        priority=10,
    )


def pool(name: str = "default", **spec: Any) -> Json:
    body: Json = {"smtp": {"host": "smtp.example.com"}}
    return {"apiVersion": API_VERSION, "kind": "SenderPool", "metadata": {"name": name}, "spec": body | spec}


def full_pool(name: str = "newsletters") -> Json:
    return pool(
        name,
        queue={"processes": 4, "maxParallelCampaigns": 2},
        redis={"enabled": True, "urlSecretRef": {"name": "redis-url", "key": "url"}},
        smtp={
            "host": "smtp.example.com",
            "port": 465,
            "security": "tls",
            "credentialsSecretRef": {"name": "smtp-auth"},
            "maxConnections": 10,
            "maxMessages": 500,
            "throttling": {"messagesPerSecond": 12.5, "burst": 20},
        },
        template={
            "image": "ghcr.io/mailtrain-operator/sender:0.1.0",
            "imagePullPolicy": "IfNotPresent",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "nodeSelector": {"pool": "mail"},
            "tolerations": [{"key": "mail", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {}},
            "podLabels": {"team": "growth"},
            "podAnnotations": {"example.com/owner": "growth"},
        },
    )


def edited(obj: Json, path: str, value: Any) -> Json:
    """A copy of obj with the dotted path set to value (None removes it). `from` is a plain key here."""
    result = copy.deepcopy(obj)
    node = result
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return result


def dumps(obj: Json) -> str:
    return json.dumps(obj, ensure_ascii=False)
