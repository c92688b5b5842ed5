"""kopf itself, set up for this operator: its marks on objects, peering, events, logging, and the run.

Where it sits: `cli.py` calls `configure_logging` and `run`; the startup handler in `handlers/startup.py`
calls `configure`, so every kopf setting is made in one place, before any watch starts. Handlers wrap
themselves in `counts_reconcile_errors`. Domain modules never import this.

What kopf writes on our objects, and why each is ours rather than kopf's default:
- the finalizer `mailtrain.dev/finalizer`, so `kubectl get -o yaml` says whose it is;
- handler progress in annotations `mailtrain.dev/<handler id>`, not in `status.kopf`: the CRDs
  have structural schemas, and the apiserver would prune a `status.kopf` it does not know, so
  kopf would lose its progress and run handlers again;
- the last handled spec in the annotation `mailtrain.dev/last-handled-configuration`, with large
  values (a 300 KB HTML body, a thousand inline recipients) replaced by their SHA-256. The
  apiserver refuses annotations above 256 KiB in all, and kopf would retry that patch forever;
  a digest still changes whenever the value does, so kopf still sees every change.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import inspect
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import kopf

from mailtrain_operator.metrics import METRICS
from mailtrain_operator.settings import OperatorSettings

GROUP = "mailtrain.dev"
FINALIZER = f"{GROUP}/finalizer"
ANNOTATION_PREFIX = GROUP
DIFF_BASE_KEY = "last-handled-configuration"
COMPONENT = "mailtrain-operator"
# A value whose JSON is longer than this is kept in the diff base as its digest. A spec holds at most
# about a hundred values (50 headers and a few fields), so the annotation stays far below 256 KiB.
DIGEST_ABOVE = 1024
_MEMO_KEY = "operator_settings"
_IDENTITY_KEY = "peering_identity"
# Peering priorities count down from 2**53 microseconds after 1970 (the year 2255): below 2**53 a
# priority is an exact integer for every JSON reader of the peering object, kubectl's included.
_PRIORITY_HORIZON_US = 2**53
# The attribute `counts_reconcile_errors` leaves on a handler, so a test can find handlers without it.
COUNTED_KIND_ATTRIBUTE = "mailtrain_reconcile_error_kind"


def _digest_large(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _digest_large(item) for key, item in value.items()}
    encoded = json.dumps(value, sort_keys=True, separators=(",", ":"))  # ASCII, as kopf stores it
    if len(encoded) <= DIGEST_ABOVE:
        return value
    return "sha256:" + hashlib.sha256(encoded.encode()).hexdigest()


class DigestingDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff base, with every large value replaced by its SHA-256 (see above)."""

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[Any] | None = None,
    ) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
        return cast(kopf.BodyEssence, _digest_large(dict(essence)))


def configure(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    """Every kopf setting of the operator. Called once, by the startup handler."""
    persistence = kopf_settings.persistence
    persistence.finalizer = FINALIZER
    persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX, v1=False)
    persistence.diffbase_storage = DigestingDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key=DIFF_BASE_KEY, v1=False
    )

    peering = kopf_settings.peering
    peering.name = settings.peering_name
    peering.standalone = settings.standalone
    # Mandatory unless standalone: without a peering object, two replicas would both be active.
    # Mandatory also means a replica starts paused, and resumes only once the peering object shows
    # no live peer above it.
    peering.mandatory = not settings.standalone
    peering.stealth = True  # keep-alives every few seconds would fill the log; pauses are still logged
    # kopf pauses *every* replica when two share a priority, so each needs its own; the oldest is
    # active, so that a new replica (a rollout, a rescheduled pod) never takes over from a working one.
    peering.priority = seniority_priority()
    peering.lifetime = settings.peering_lifetime

    posting = kopf_settings.posting
    posting.enabled = True
    posting.loggers = False  # only the Events we post on purpose (Scheduled, Started, ...)
    posting.reporting_component = COMPONENT
    posting.reporting_instance = socket.gethostname()  # the pod's name in a pod
    posting.event_name_prefix = "mailtrain-"


def seniority_priority(started_ns: int | None = None) -> int:
    """The peering priority of a replica started at `started_ns` (now by default): earlier is higher.

    Two replicas tie only if they start in the same microsecond; kopf would then pause both.
    """
    started_us = (time.time_ns() if started_ns is None else started_ns) // 1000
    return _PRIORITY_HORIZON_US - started_us


Handler = TypeVar("Handler", bound=Callable[..., Any])


def counts_reconcile_errors(kind: str) -> Callable[[Handler], Handler]:
    """Counts every exception that leaves the handler in `mailtrain_operator_reconcile_errors_total`
    {kind}, then lets kopf handle it as usual (retry, or give up on a PermanentError).

    kopf has no hook for failed handlers, so each handler wears this, below kopf's decorator (kopf
    must register the counting function)::

        @kopf.on.create("mailtrain.dev", "v1alpha1", "mailcampaigns")
        @framework.counts_reconcile_errors("MailCampaign")
        async def created(...): ...

    Sync and async handlers both work. A parent handler that runs sub-handlers with `kopf.execute`
    should not wear it (kopf signals unfinished children with an exception): its children should.
    """
    if not kind or not kind[0].isupper():
        raise ValueError(f"kind {kind!r} is not a Kind (e.g. 'MailCampaign')")
    counter = METRICS.reconcile_errors.labels(kind)

    def decorate(handler: Handler) -> Handler:
        wrapper: Callable[..., Any]
        if inspect.iscoroutinefunction(handler):  # kopf awaits these, and runs others on a thread

            @functools.wraps(handler)
            async def counting_async(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await handler(*args, **kwargs)
                except Exception:
                    counter.inc()
                    raise

            wrapper = counting_async
        else:

            @functools.wraps(handler)
            def counting(*args: Any, **kwargs: Any) -> Any:
                try:
                    return handler(*args, **kwargs)
                except Exception:
                    counter.inc()
                    raise

            wrapper = counting
        setattr(wrapper, COUNTED_KIND_ATTRIBUTE, kind)
        return cast(Handler, wrapper)

    return decorate


def operator_identity(memo: kopf.Memo) -> str:
    """This replica's identity among its peers, the one `run` gave kopf."""
    found = memo[_IDENTITY_KEY]
    assert isinstance(found, str)
    return found


def operator_settings(memo: kopf.Memo) -> OperatorSettings:
    """Our settings, as `run` put them into kopf's memo (every handler gets a copy of it)."""
    settings = memo[_MEMO_KEY]
    assert isinstance(settings, OperatorSettings)
    return settings


def configure_logging(settings: OperatorSettings) -> None:
    json_lines = settings.log_format == "json"
    kopf.configure(
        debug=settings.log_level == "debug",
        log_format=kopf.LogFormat.JSON if json_lines else kopf.LogFormat.FULL,
        log_refkey="object" if json_lines else None,
    )
    # kopf knows debug, info and warning; error is ours to set.
    logging.getLogger().setLevel(settings.log_level.upper())
    if settings.log_level != "debug":  # a line for every liveness probe, every few seconds, says nothing
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        logging.getLogger("kopf.objects").addFilter(_routine_success)


# Handlers that run on every watch event of their objects (a rollout gives dozens): kopf logs each
# success at info, which would bury the decisions. What they change, they log themselves.
ROUTINE_HANDLERS = ("sender_deployment_event",)
_ROUTINE_SUCCESSES = frozenset(f"Handler {handler!r} succeeded." for handler in ROUTINE_HANDLERS)


def _routine_success(record: logging.LogRecord) -> bool:
    return not (record.levelno == logging.INFO and record.msg in _ROUTINE_SUCCESSES)


def identity() -> str:
    """This operator's name among its peers: $POD_ID (kopf's convention), else host/start time/pid.

    kopf's own default asks the password database for the user's name, and a container running as
    a UID without an entry there (USER 10001 in our image, or OpenShift's random UIDs) crashes on it.
    """
    started = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S")
    return os.environ.get("POD_ID") or f"{socket.gethostname()}/{started}/{os.getpid()}"


class OperatorFailed(Exception):
    """kopf stopped because handlers of an activity gave up (kopf.PermanentError in a startup handler: a
    missing peering object, CRD or permission, an address in use): why, in one line."""


def run(settings: OperatorSettings) -> None:
    """Run kopf until SIGTERM or SIGINT, with the handlers of the `handlers` package."""
    from mailtrain_operator import handlers  # noqa: F401

    me = identity()
    try:
        kopf.run(
            clusterwide=settings.clusterwide,
            namespaces=settings.namespaces,
            liveness_endpoint=f"http://{settings.health_listen}/healthz",
            memo=kopf.Memo({_MEMO_KEY: settings, _IDENTITY_KEY: me}),
            identity=cast(Any, me),  # kopf's Identity is a NewType of str it does not export
        )
    except Exception as exc:
        # kopf's ActivityError (not exported: matched by its `outcomes`, one per handler). kopf logged
        # each failure already; the exit says it once more, instead of a traceback.
        outcomes = getattr(exc, "outcomes", None)
        if not isinstance(outcomes, dict):
            raise
        reasons = [str(outcome.exception) for outcome in outcomes.values() if outcome.exception]
        raise OperatorFailed("; ".join(reasons) or str(exc)) from None
