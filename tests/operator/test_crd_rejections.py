"""Every invalid example is refused by the apiserver with a message that says what to fix.

Each case is applied with `kubectl apply` against the real apiserver, and the test asserts the line a
person sees: the field path, then the message. Every CEL rule of both CRDs has at least one case
here (checked below), so a rule cannot be added without showing its message.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness.controlplane import ControlPlane
from tests.operator import examples
from tests.operator.conftest import crd
from tests.operator.examples import campaign, edited, pool

pytestmark = pytest.mark.usefixtures("crds")

_ADDRESS = (
    "must be a bare address such as news@acme.example: ASCII, no display name (that is from.name), no "
    "spaces, "
    "commas or quotes, and a domain with a dot ending in a letter; write an internationalised domain in its "
    "xn-- form"
)
_RESERVED = (
    "From, To, Subject, Date, Message-ID, MIME-Version, List-ID, List-Unsubscribe, List-Unsubscribe-Post, "
    "Content-Type, Content-Transfer-Encoding, Sender and Return-Path are set by the sender and cannot be set "
    "in headers (use from, subject, listId and listUnsubscribe)"
)
_ONE_SOURCE = "recipients needs exactly one of inline, configMapRef, secretRef or url"
_MC = campaign("bad")
_SP = pool("bad")

# name: (object, field path, what the person reads after the path)
CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    # -- MailCampaign: content -----------------------------------------------------------------------
    "no body": (edited(_MC, "spec.text", None), "spec", "set text, html, or both"),
    "body too large": (
        edited(edited(_MC, "spec.text", "a" * 600_000), "spec.html", "ä" * 300_000),
        "spec",
        "text and html together must be at most 1 MiB (1,048,576 bytes of UTF-8); link large images "
        "instead of "
        "embedding them",
    ),
    "NUL in the body": (
        edited(_MC, "spec.html", "<p>\x00</p>"),
        "spec.html",
        "must not contain a NUL character (RFC 5322 allows none in a message body)",
    ),
    "no subject": (edited(_MC, "spec.subject", None), "spec.subject", "Required value"),
    "subject with a line break": (
        edited(_MC, "spec.subject", "Hi\r\nBcc: all@acme.example"),
        "spec.subject",
        "must not contain control characters such as CR or LF (TAB is allowed): the subject is one "
        "header line",
    ),
    # -- MailCampaign: addresses -----------------------------------------------------------------------
    "display name in from.address": (
        edited(_MC, "spec.from.address", "Acme <news@acme.example>"),
        "spec.from.address",
        _ADDRESS,
    ),
    "two addresses in from.address": (
        edited(_MC, "spec.from.address", "a@acme.example,b@acme.example"),
        "spec.from.address",
        _ADDRESS,
    ),
    "non-ASCII from.address": (
        edited(_MC, "spec.from.address", "post@bücher.example"),
        "spec.from.address",
        _ADDRESS,
    ),
    "domain without a dot": (
        edited(_MC, "spec.from.address", "news@localhost"),
        "spec.from.address",
        _ADDRESS,
    ),
    "hyphens where Punycode goes": (
        edited(_MC, "spec.from.address", "news@ab--cd.example"),
        "spec.from.address",
        "a domain label may have '--' as its 3rd and 4th characters only if it is Punycode (xn--)",
    ),
    "special-use domain": (
        edited(_MC, "spec.from.address", "news@mail.test"),
        "spec.from.address",
        "the domain is a special-use name (.arpa, .invalid, .local, .localhost, .onion, .test) that "
        "cannot send mail",
    ),
    "control character in from.name": (
        edited(_MC, "spec.from.name", "Acme\tNews"),
        "spec.from.name",
        "must not contain control characters (CR, LF, TAB, NUL ...)",
    ),
    # -- MailCampaign: headers -------------------------------------------------------------------------
    "header name with a space": (
        edited(_MC, "spec.headers", {"X Campaign": "1"}),
        "spec.headers",
        "header names must be RFC 5322 field names: 1 to 76 printable ASCII characters, without spaces "
        "or ':'",
    ),
    "header name with a colon": (
        edited(_MC, "spec.headers", {"X-Campaign:": "1"}),
        "spec.headers",
        "header names must be RFC 5322",
    ),
    "header name too long": (edited(_MC, "spec.headers", {"X-" + "a" * 75: "1"}), "spec.headers", "1 to 76"),
    "reserved header, any case": (
        edited(_MC, "spec.headers", {"message-id": "<x@y>"}),
        "spec.headers",
        _RESERVED,
    ),
    "line break in a header value": (
        edited(_MC, "spec.headers", {"X-Campaign": "a\r\nBcc: all@acme.example"}),
        "spec.headers[X-Campaign]",
        "a header value must not contain control characters such as CR or LF (TAB is allowed)",
    ),
    "too many headers": (
        edited(_MC, "spec.headers", {f"X-H{i}": "1" for i in range(51)}),
        "spec.headers",
        "must have at most 50 items",
    ),
    # -- MailCampaign: list headers --------------------------------------------------------------------
    "listId in angle brackets": (
        edited(_MC, "spec.listId", "<newsletter.acme.example>"),
        "spec.listId",
        "must be a list identifier such as newsletter.acme.example: dot-separated ASCII words, at least two, "
        "without < >",
    ),
    "listUnsubscribe without url or mailto": (
        edited(_MC, "spec.listUnsubscribe", {"oneClick": False}),
        "spec.listUnsubscribe",
        "listUnsubscribe needs url or mailto",
    ),
    "one-click without a url": (
        edited(_MC, "spec.listUnsubscribe", {"mailto": "u@acme.example", "oneClick": True}),
        "spec.listUnsubscribe",
        "listUnsubscribe.oneClick needs an https url (RFC 8058)",
    ),
    "plain http unsubscribe url": (
        edited(_MC, "spec.listUnsubscribe", {"url": "http://acme.example/u/{{ token }}"}),
        "spec.listUnsubscribe.url",
        "must be an https:// URL template: printable ASCII without spaces, commas or < > outside {{ }}, e.g. "
        "https://acme.example/unsubscribe/{{ token }}",
    ),
    "space in the unsubscribe url": (
        edited(_MC, "spec.listUnsubscribe", {"url": "https://acme.example/un subscribe/{{ token }}"}),
        "spec.listUnsubscribe.url",
        "must be an https:// URL template",
    ),
    "display name in the mailto": (
        edited(_MC, "spec.listUnsubscribe", {"mailto": "Unsubscribe <u@acme.example>"}),
        "spec.listUnsubscribe.mailto",
        _ADDRESS,
    ),
    # -- MailCampaign: recipients and the rest ---------------------------------------------------------
    "two recipient sources": (
        edited(_MC, "spec.recipients.url", {"href": "https://acme.example/list.csv"}),
        "spec.recipients",
        _ONE_SOURCE,
    ),
    "no recipient source": (edited(_MC, "spec.recipients", {}), "spec.recipients", _ONE_SOURCE),
    "more than 1000 inline recipients": (
        edited(_MC, "spec.recipients.inline", [{"email": f"r{i}@b.example"} for i in range(1001)]),
        "spec.recipients.inline",
        "must have at most 1000 items",
    ),
    "ConfigMap name with capitals": (
        edited(_MC, "spec.recipients", {"configMapRef": {"name": "Winter_List", "key": "list.csv"}}),
        "spec.recipients.configMapRef.name",
        "must be a ConfigMap or Secret name: lowercase letters, digits, '-' and '.'",
    ),
    "Secret key with a slash": (
        edited(_MC, "spec.recipients", {"secretRef": {"name": "list", "key": "lists/winter.csv"}}),
        "spec.recipients.secretRef.key",
        "must be a ConfigMap or Secret key: letters, digits, '-', '_' and '.'",
    ),
    "unknown list format": (
        edited(_MC, "spec.recipients", {"configMapRef": {"name": "list", "key": "l", "format": "xlsx"}}),
        "spec.recipients.configMapRef.format",
        'Unsupported value: "xlsx": supported values: "csv", "jsonl"',
    ),
    "ftp url": (
        edited(_MC, "spec.recipients", {"url": {"href": "ftp://acme.example/list.csv"}}),
        "spec.recipients.url.href",
        "must be an http:// or https:// URL without spaces",
    ),
    "pool name with capitals": (
        edited(_MC, "spec.senderPool", "Newsletters"),
        "spec.senderPool",
        "must be a SenderPool name: lowercase letters, digits and '-', starting with a letter",
    ),
    "startAt not a time": (
        edited(_MC, "spec.startAt", "tomorrow 9am"),
        "spec.startAt",
        "must be of type date-time",
    ),
    "priority out of range": (
        edited(_MC, "spec.priority", 5000),
        "spec.priority",
        "less than or equal to 1000",
    ),
    # -- SenderPool ------------------------------------------------------------------------------------
    "pool name with a dot": (
        edited(_SP, "metadata.name", "mail.eu"),
        "metadata.name",
        "a SenderPool name must be lowercase letters, digits and '-', starting with a letter, since its "
        "Services are named after it",
    ),
    "pool name too long": (
        edited(_SP, "metadata.name", "p" * 51),
        "metadata.name",
        "may not be more than 50 bytes",
    ),
    "no smtp": (edited(_SP, "spec.smtp", None), "spec.smtp", "Required value"),
    "several processes without a shared Redis": (
        edited(edited(_SP, "spec.redis", {"enabled": False}), "spec.queue", {"processes": 3}),
        "spec.queue.processes",
        "queue.processes must be 1 when redis.enabled is false: several processes coordinate through a "
        "shared "
        "Redis",
    ),
    "url and urlSecretRef": (
        edited(_SP, "spec.redis", {"url": "redis://r:6379/0", "urlSecretRef": {"name": "r", "key": "url"}}),
        "spec.redis",
        "set redis.url or redis.urlSecretRef, not both",
    ),
    "url with a private Redis": (
        edited(_SP, "spec.redis", {"enabled": False, "url": "redis://r:6379/0"}),
        "spec.redis",
        "redis.url and redis.urlSecretRef need redis.enabled: true; with enabled: false the pool runs a "
        "private "
        "Redis",
    ),
    "password in the Redis url": (
        edited(_SP, "spec.redis", {"url": "redis://:hunter2@redis:6379/0"}),
        "spec.redis.url",
        "must not contain a password, which anyone who can read the SenderPool could read; put the "
        "whole URL in a "
        "Secret and use urlSecretRef",
    ),
    "not a Redis url": (
        edited(_SP, "spec.redis", {"url": "redis.mail.svc:6379"}),
        "spec.redis.url",
        "must be a redis:// or rediss:// (TLS) URL without spaces, e.g. redis://redis:6379/0",
    ),
    "Secret key with a slash in urlSecretRef": (
        edited(_SP, "spec.redis", {"urlSecretRef": {"name": "redis", "key": "a/b"}}),
        "spec.redis.urlSecretRef.key",
        "must be a Secret key: letters, digits, '-', '_' and '.'",
    ),
    "port in the SMTP host": (
        edited(_SP, "spec.smtp.host", "smtp.example.com:587"),
        "spec.smtp.host",
        "must be a host name or IP address alone, without a scheme or a port (the port is smtp.port)",
    ),
    "ssl is not a security mode": (
        edited(_SP, "spec.smtp.security", "ssl"),
        "spec.smtp.security",
        'Unsupported value: "ssl": supported values: "none", "starttls", "tls"',
    ),
    "credentials Secret name with capitals": (
        edited(_SP, "spec.smtp.credentialsSecretRef", {"name": "SMTP"}),
        "spec.smtp.credentialsSecretRef.name",
        "must be a Secret name: lowercase letters, digits, '-' and '.'",
    ),
    "no connections": (
        edited(_SP, "spec.smtp.maxConnections", 0),
        "spec.smtp.maxConnections",
        "greater than or equal to 1",
    ),
    "negative rate": (
        edited(_SP, "spec.smtp.throttling", {"messagesPerSecond": -5}),
        "spec.smtp.throttling.messagesPerSecond",
        "greater than or equal to 0",
    ),
    "too many processes": (
        edited(_SP, "spec.queue", {"processes": 201}),
        "spec.queue.processes",
        "less than or equal to 200",
    ),
}


SERVER_SIDE = {"body too large"}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_an_invalid_object_is_refused_with_what_to_fix(crds: ControlPlane, namespace: str, case: str) -> None:
    obj, field, message = CASES[case]
    # A client-side apply copies the object into an annotation, which the apiserver caps at 256 KiB
    # before any rule runs: a large campaign is applied server-side (docs/api.md says so).
    side = ["--server-side"] if case in SERVER_SIDE else []
    result = crds.kubectl("apply", *side, "-n", namespace, "-f", "-", input=examples.dumps(obj), check=False)
    assert result.returncode != 0, f"accepted: {case}"
    assert any(error.startswith(f"{field}: ") and message in error for error in _errors(result.stderr)), (
        f"expected {field}: ... {message}\ngot: {result.stderr}"
    )


def _errors(stderr: str) -> list[str]:
    """The field errors kubectl prints: one after "is invalid: ", or several as "* " lines below it."""
    text = stderr.partition(" is invalid: ")[2]
    return [line.strip().removeprefix("* ") for line in text.splitlines() if line.strip()]


def test_every_cel_rule_has_a_case_that_shows_its_message() -> None:
    def rules(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, dict):
            own: list[dict[str, Any]] = node.get("x-kubernetes-validations", [])
            return own + [r for v in node.values() for r in rules(v)]
        return [r for v in node for r in rules(v)] if isinstance(node, list) else []

    messages = {
        rule["message"]
        for kind in ("SenderPool", "MailCampaign")
        for rule in rules(crd(kind))
        if "message" in rule
    }
    shown = {message for _, _, message in CASES.values()}
    immutable = {
        "senderPool cannot change once the campaign exists",
        "recipients cannot change once the campaign exists; create a new MailCampaign",
    }
    missing = {m for m in messages - immutable if not any(m in s for s in shown)}
    assert not missing, f"rules without a case here: {missing}"
    assert all("message" in rule for kind in ("SenderPool", "MailCampaign") for rule in rules(crd(kind)))


def test_what_cannot_change_says_so(crds: ControlPlane, namespace: str) -> None:
    crds.kubectl("apply", "-n", namespace, "-f", "-", input=examples.dumps(campaign("fixed")))
    for path, value, message in (
        (
            "spec.senderPool",
            "other",
            "senderPool cannot change once the campaign exists",
        ),
        (
            "spec.recipients",
            {"inline": [{"email": "c@d.example"}]},
            "recipients cannot change once the campaign exists; create a new MailCampaign",
        ),
    ):
        changed = edited(campaign("fixed"), path, value)
        result = crds.kubectl("apply", "-n", namespace, "-f", "-", input=examples.dumps(changed), check=False)
        assert result.returncode != 0
        assert any(e.startswith(f"{path}: ") and message in e for e in _errors(result.stderr)), result.stderr


def test_scaling_a_pool_with_a_private_redis_is_refused(crds: ControlPlane, namespace: str) -> None:
    crds.kubectl(
        "apply", "-n", namespace, "-f", "-", input=examples.dumps(pool("solo", redis={"enabled": False}))
    )
    result = crds.kubectl("scale", "-n", namespace, "sp/solo", "--replicas=3", check=False)
    assert result.returncode != 0
    assert "queue.processes must be 1 when redis.enabled is false" in result.stderr
