"""What the MailCampaign CRD accepts, the sender can send: the CEL rules held against the sender itself.

Each candidate goes to the real apiserver (a server-side dry run) and to the sender's own checks
(`CompiledCampaign`, which runs wire_checks.py, then a rendered and built message). Whatever the CRD
accepts must pass the sender, except the gaps CEL cannot close, listed here with the reason, and
on these candidates the CRD refuses nothing the sender would send either.
"""

from __future__ import annotations

from typing import Any

import pytest

from mailtrain_sender.layout import CampaignWire, Recipient
from mailtrain_sender.render import CompiledCampaign, message_date
from tests.harness.controlplane import ControlPlane
from tests.harness.kubeapi import KubeApiError
from tests.operator import examples

pytestmark = pytest.mark.usefixtures("crds")

# Accepted by the CRD, refused by the sender, and why CEL cannot tell. The operator's check at pick-up
# (a later section of issue 8) must refuse these with a condition.
KNOWN_GAPS = {
    "news@xn--zz.example": "a label that looks like Punycode but does not decode (CEL cannot decode it)",
    "news@xn--ls8h.example": "Punycode of a character IDNA does not allow (CEL cannot decode it)",
}

ADDRESSES = [
    "news@acme.example",
    "NEWS@ACME.EXAMPLE",
    "first.last+winter@mail.acme.example",
    "o'brien@acme.example",
    "#!$%&'*+/=?^_`{|}~-@acme.example",
    "a@b.co",
    "news@1.example",
    "news@a-b.example",
    "news@xn--bcher-kva.example",
    "x" * 100 + "@acme.example",
    "news@" + "a" * 63 + ".example",
    "news@" + "a" * 64 + ".example",
    "news@acme",
    "news@acme.",
    "news@acme.123",
    "news@-acme.example",
    "news@acme-.example",
    "news@acme..example",
    ".news@acme.example",
    "news.@acme.example",
    "ne..ws@acme.example",
    "news@ab--cd.example",
    "news@acme.test",
    "news@mail.local",
    "news@acme.onion",
    "news@localhost",
    "news@[192.0.2.1]",
    '"news letter"@acme.example',
    "news letter@acme.example",
    "news@acme.example ",
    "a,b@acme.example",
    "Acme <news@acme.example>",
    "nëws@acme.example",
    "news@bücher.example",
    *KNOWN_GAPS,
]


def _crd_accepts(plane: ControlPlane, namespace: str, spec: dict[str, Any]) -> bool:
    body = examples.campaign("probe") | {"spec": spec}
    try:
        plane.api.request(
            "POST",
            f"/apis/mailtrain.dev/v1alpha1/namespaces/{namespace}/mailcampaigns",
            body,
            {"dryRun": "All"},
        )
    except KubeApiError as exc:
        if exc.status != 422:  # refused for another reason than the schema
            raise
        return False
    return True


def _sender_accepts(spec: dict[str, Any]) -> bool:
    """The campaign as the operator will publish it, checked and one message built, as a sender does."""
    wire = CampaignWire.model_validate(
        {
            "id": "c0ffee",
            "name": "t/probe",
            "pool": "default",
            "from": spec["from"],
            "subject": spec["subject"],
            "text": spec.get("text"),
            "html": spec.get("html"),
            "headers": spec.get("headers", {}),
            "listUnsubscribe": spec.get("listUnsubscribe"),
            "listId": f"<{spec['listId']}>" if "listId" in spec else None,
            "createdMs": 0,
            "tokenKey": "probe",
        }
    )
    try:
        compiled = CompiledCampaign(wire)
        # vars that a URL must percent-encode, and a name the From/To folding must handle.
        rendered = compiled.render(Recipient("anna@example.org", "Anna Müller", {"city": "Köln, <a b>"}), 0)
        compiled.build(rendered, message_date())
    except ValueError:  # CampaignError and RecipientError both are
        return False
    return True


def _says(accepted: bool) -> str:
    return "accepts" if accepted else "refuses"


def _verdicts(plane: ControlPlane, namespace: str, spec: dict[str, Any]) -> tuple[bool, bool]:
    return _crd_accepts(plane, namespace, spec), _sender_accepts(spec)


def _spec(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = examples.campaign()["spec"]
    return base | {"text": "Hi {{ name }}, greetings to {{ vars.city }}"} | changes


@pytest.mark.parametrize("field", ["from.address", "listUnsubscribe.mailto"])
def test_the_crd_and_the_sender_agree_on_sending_addresses(
    crds: ControlPlane, namespace: str, field: str
) -> None:
    wrong = []
    for address in ADDRESSES:
        spec = (
            _spec(**{"from": {"address": address}})
            if field == "from.address"
            else _spec(listUnsubscribe={"mailto": address})
        )
        crd, sender = _verdicts(crds, namespace, spec)
        if address in KNOWN_GAPS:
            assert crd and not sender, f"{address!r} is no longer a gap: remove it from KNOWN_GAPS"
        elif crd != sender:
            wrong.append(f"{address!r}: the CRD {_says(crd)}, the sender {_says(sender)}")
    assert not wrong, f"{field}: the CRD and the sender disagree:\n" + "\n".join(wrong)
    assert _verdicts(crds, namespace, _spec()) == (True, True)


HEADER_CANDIDATES: dict[str, dict[str, Any]] = {
    **{
        f"from.name {name!r:.30}": {"from": {"address": "news@acme.example", "name": name}}
        for name in (
            "Acme",
            "Acme, Inc.",
            'Acme "Best" News',
            "Grüße aus Köln",
            "東京ニュース",
            "Tab\there",
            "x" * 256,
        )
    },
    **{
        f"subject {subject!r:.30}": {"subject": subject}
        for subject in (
            "Hi {{ name }}",
            "Grüße\t{{ vars.city }}",
            "a\rb",
            "x" * 998,
            "{{ name }\n}",
            "\u2028",
        )
    },
    **{
        f"headers {headers!r:.40}": {"headers": headers}
        for headers in (
            {"X-Campaign": "winter", "Precedence": "bulk"},
            {"X-Tab": "a\tb", "X-Utf8": "Grüße"},
            {"X-Long": "v" * 998},
            {"X-" + "n" * 74: "1"},
            {"Reply-To": "help@acme.example"},
            {"from": "x@acme.example"},
            {"X-A": "a\u0085b"},
        )
    },
    **{
        f"listUnsubscribe {unsubscribe!r:.50}": {"listUnsubscribe": unsubscribe}
        for unsubscribe in (
            {"url": "https://acme.example/u/{{ token }}", "oneClick": True},
            {"url": "https://acme.example/u?t={{ token }}&c={{ vars.city }}", "mailto": "u@acme.example"},
            {"url": "https://acme.example/u/{# a comment #}{{ token }}"},
            {"url": "https://acme.example/u/{% if vars.city %}{{ vars.city }}{% endif %}"},
            {"url": "https://acme.example/u,{{ token }}"},
            {"url": "https://acme.example/ü/{{ token }}"},
            {"url": "https://acme.example/u/{{ token }"},
        )
    },
    **{
        f"listId {list_id!r}": {"listId": list_id}
        for list_id in ("newsletter.acme.example", "a.b", "news", "news letter.acme.example")
    },
}


@pytest.mark.parametrize("case", HEADER_CANDIDATES, ids=list(HEADER_CANDIDATES))
def test_the_crd_and_the_sender_agree_on_headers(crds: ControlPlane, namespace: str, case: str) -> None:
    crd, sender = _verdicts(crds, namespace, _spec(**HEADER_CANDIDATES[case]))
    assert crd == sender, (
        f"the CRD {'accepts' if crd else 'refuses'} what the sender {'accepts' if sender else 'refuses'}"
    )
