"""Alerts: raised by a monitor's breach, at most one per finding within the monitor's
cooldown, and POSTed to its webhook.

A breach's ``dedup_key`` names what breached: the sorted drifted columns of a drift
check, the metric of a performance check. Within ``cooldown_seconds`` of an alert with
the same key the breach raises none (its evaluation is stored all the same, naming the
alert that stands for it); a different finding alerts at once.

Delivery is a round of up to ``WebhookPolicy.attempts`` POSTs with exponential back-off,
the whole round bounded by ``budget`` seconds (each attempt's connect, write and read by
``timeout``, and the whole answer by the budget's deadline on the wall clock: past it the
connection is closed), so a webhook that never answers, or trickles its answer, costs one
budget, never a hang. A round runs after the alert's transaction has committed: no
transaction is held open across the network. A process takes a round by claiming the
alert (``sending``, ``claimed_at`` its time, ``rounds`` one more), an update only one
process's succeeds; no other pass takes the alert until that claim expires (one budget,
one timeout and the grace after it: its process died).
A failed round is retried by the monitor scheduler (``loop.py``) after ``retry_after``
seconds, doubling for each round (``rounds``, whatever the attempts each round made), until
``max_attempts`` attempts have been made; a 4xx answer but 408 and 429 ends the delivery
(``last_error``: ``not retried: HTTP 404: ...``). The body carries the alert's id: a
receiver told twice (a round retried after its answer was lost) can tell.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Connection, insert, or_, select, update

from plinth.monitoring.rows import read_json
from plinth.monitoring.types import PERFORMANCE_KINDS, Monitor
from plinth.store.engine import Store
from plinth.store.schema import alerts, monitor_evaluations, monitors
from plinth.store.sql import now_ms

log = logging.getLogger("plinth.monitoring")

#: the longest dedup key stored as it reads; longer ones end in a digest of the whole
_KEY_CHARS = 400
_ERROR_CHARS = 1000
#: how ``last_error`` starts when the webhook refused the alert for good
_REFUSED = "not retried: "


@dataclass(frozen=True)
class WebhookPolicy:
    """How hard an alert's webhook is tried. ``attempts`` per round, the first retry after
    ``backoff`` seconds (doubling), each attempt's network waits bounded by ``timeout``,
    the round by ``budget``; rounds until ``max_attempts`` in all, the scheduler's first
    after ``retry_after`` seconds (doubling per round). An alert still ``pending``
    ``grace`` seconds after it was raised (its process died before its round) is taken up
    by the scheduler."""

    attempts: int = 3
    backoff: float = 0.5
    timeout: float = 3.0
    budget: float = 8.0
    max_attempts: int = 24
    retry_after: float = 60.0
    grace: float = 30.0


@dataclass(frozen=True)
class DeliveryResult:
    """A round's outcome; ``refused``: the webhook answered a 4xx not worth repeating (not
    408 or 429), so the alert is not tried again."""

    delivered: bool
    attempts: int
    last_error: str | None
    refused: bool = False


# -- the finding -----------------------------------------------------------------------------


def dedup_key(monitor: Monitor, result: Mapping[str, Any]) -> str:
    """What breached: ``metric:auc`` for performance kinds, ``drift:a,b`` (sorted drifted
    columns) for drift kinds (``drift:dataset`` when the report names none)."""
    if monitor.kind in PERFORMANCE_KINDS:
        return f"metric:{monitor.spec.metric or result.get('metric') or '-'}"
    drifted = drifted_columns(result)
    key = "drift:" + (",".join(drifted) if drifted else "dataset")
    if len(key) <= _KEY_CHARS:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{key[: _KEY_CHARS - 17]}~{digest}"


def drifted_columns(result: Mapping[str, Any]) -> list[str]:
    """The drifted columns a drift report (``DriftReport.to_dict()``) names, sorted."""
    columns = result.get("columns")
    if not isinstance(columns, list):
        return []
    return sorted(
        str(c["column"])
        for c in columns
        if isinstance(c, dict) and c.get("drifted") and "column" in c
    )


def severity_of(monitor: Monitor) -> str:
    """``critical`` when a model's performance breaks its bounds, ``warning`` for drift
    (a cause to look into, not yet a failure)."""
    return "critical" if monitor.kind in PERFORMANCE_KINDS else "warning"


def result_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """The report's top-level figures (scalars) and its drifted columns: what a webhook's
    reader needs, without the per-column detail."""
    summary: dict[str, Any] = {
        key: value
        for key, value in result.items()
        if isinstance(value, str | int | float | bool) or value is None
    }
    summary = {k: v for k, v in summary.items() if not isinstance(v, str) or len(v) <= 500}
    drifted = drifted_columns(result)
    if drifted:
        summary["drifted_columns"] = drifted[:100]
    return summary


# -- the alert, in the evaluation's transaction ---------------------------------------------


def raise_alert(
    conn: Connection,
    monitor: Monitor,
    evaluation_id: int,
    at_ms: int,
    message: str,
    key: str,
) -> int:
    """Store the alert of a breach (``pending`` delivery when the monitor has a webhook)."""
    alert_id: int = conn.execute(
        insert(alerts)
        .returning(alerts.c.id)
        .values(
            monitor=monitor.name,
            evaluation_id=evaluation_id,
            at=at_ms,
            severity=severity_of(monitor),
            message=message,
            dedup_key=key,
            status="open",
            delivery="pending" if monitor.webhook_url else "none",
            attempts=0,
            rounds=0,
        )
    ).scalar_one()
    log.warning(
        "monitor %r (%s on %s): alert %d [%s]: %s",
        monitor.name,
        monitor.kind,
        monitor.target,
        alert_id,
        severity_of(monitor),
        message,
    )
    return alert_id


def standing_alert(conn: Connection, monitor: Monitor, key: str, at_ms: int) -> int | None:
    """The alert for the same finding raised within the cooldown, if any: it stands for a
    new breach, which then raises none."""
    if monitor.cooldown_seconds <= 0:
        return None
    c = alerts.c
    since = at_ms - monitor.cooldown_seconds * 1000
    found = conn.execute(
        select(c.id)
        .where(c.monitor == monitor.name, c.dedup_key == key, c.at > since)
        .order_by(c.at.desc(), c.id.desc())
        .limit(1)
    ).scalar()
    return None if found is None else int(found)


# -- delivery --------------------------------------------------------------------------------


def payload(
    monitor: Mapping[str, Any], alert: Mapping[str, Any], result: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON body POSTed to the webhook, from the rows of the monitor and the alert and
    the evaluation's report."""
    return {
        "monitor": monitor["name"],
        "kind": monitor["kind"],
        "target": monitor["target"],
        "status": "breach",
        "severity": alert["severity"],
        "summary": alert["message"],
        "evaluation_id": alert["evaluation_id"],
        "alert_id": alert["id"],
        "dedup_key": alert["dedup_key"],
        "at": datetime.fromtimestamp(alert["at"] / 1000, UTC).isoformat(),
        "result": result_summary(result),
    }


def post(
    url: str,
    body: Mapping[str, Any],
    policy: WebhookPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> DeliveryResult:
    """One round of POSTs of ``body`` to ``url``: until an answer 2xx, a refusal not worth
    repeating (4xx but 408 and 429), ``policy.attempts`` attempts or the budget spent."""
    content = json.dumps(body, allow_nan=False, default=str).encode()
    deadline = clock() + policy.budget
    error: str | None = None
    made = 0
    for attempt in range(policy.attempts):
        remaining = deadline - clock()
        if remaining <= 0.01:
            break
        made += 1
        code, error = _attempt(url, content, min(policy.timeout, remaining), deadline, clock)
        if code is not None and 200 <= code < 300:
            return DeliveryResult(True, made, None)
        if code is not None and 400 <= code < 500 and code not in (408, 429):
            return DeliveryResult(False, made, error, refused=True)
        wait = policy.backoff * 2**attempt
        if attempt + 1 < policy.attempts:
            if deadline - clock() <= wait:
                break  # the back-off does not fit in the budget: the round ends short
            sleep(wait)
    return DeliveryResult(False, made, error or "the delivery budget was spent before an attempt")


def _attempt(
    url: str, content: bytes, timeout: float, deadline: float, clock: Callable[[], float]
) -> tuple[int | None, str | None]:
    """The answer's status (None when there was none) and, unless 2xx, what went wrong;
    by ``deadline`` whatever the webhook does. httpx bounds each network wait, not the
    whole answer (a receiver trickling its headers a byte a second holds a request for
    ever), so the request runs in a worker thread: past the deadline its connection is
    closed under it (its next read fails) and the attempt counts as unanswered."""
    client = httpx.Client(timeout=timeout, follow_redirects=False)
    answer: list[tuple[int | None, str | None]] = []
    started = clock()

    def run() -> None:
        try:
            answer.append(_send(client, url, content, timeout, deadline, clock))
        except Exception as exc:  # closed under it past the deadline: nobody is waiting
            answer.append((None, f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]))

    worker = threading.Thread(target=run, name="plinth-webhook", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - clock()))
    client.close()
    if answer and not worker.is_alive():
        return answer[0]
    return None, f"no complete answer within {max(0.0, deadline - started):.2f} s"


def _send(
    client: httpx.Client,
    url: str,
    content: bytes,
    timeout: float,
    deadline: float,
    clock: Callable[[], float],
) -> tuple[int | None, str | None]:
    headers = {"content-type": "application/json", "user-agent": "plinth-monitoring"}
    try:
        with client.stream("POST", url, content=content, headers=headers) as response:
            code = response.status_code
            # the body is not needed: read a little of it for the error, within the deadline
            text = _some_of(response, deadline, clock) if code >= 300 else ""
    except httpx.TimeoutException:
        return None, f"no answer within {timeout:.3g} s"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
    if 200 <= code < 300:
        return code, None
    said = f": {text.strip()}" if text.strip() else ""
    return code, f"HTTP {code}{said}"[:_ERROR_CHARS]


def _some_of(response: httpx.Response, deadline: float, clock: Callable[[], float]) -> str:
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= 300 or clock() > deadline:
                break
    except httpx.HTTPError:
        pass
    return b"".join(chunks)[:300].decode("utf-8", "replace")


# -- the alerts' delivery state --------------------------------------------------------------


@dataclass(frozen=True)
class PendingDelivery:
    """An alert to tell its monitor's webhook about, with the body to send."""

    alert_id: int
    monitor: str
    url: str
    body: dict[str, Any]
    attempts: int
    delivery: str = "pending"
    last_error: str | None = None
    rounds: int = 0
    claimed_at: int | None = None
    at_ms: int = 0

    @property
    def refused(self) -> bool:
        """Whether the webhook refused the alert for good (a 4xx but 408 and 429)."""
        return self.delivery == "failed" and (self.last_error or "").startswith(_REFUSED)


def pending_delivery(store: Store, alert_id: int) -> PendingDelivery | None:
    """The alert's delivery if it is still to be made (pending or failed, attempts left)."""
    with store.read() as conn:
        rows = [
            dict(r) for r in conn.execute(_deliveries().where(alerts.c.id == alert_id)).mappings()
        ]
    return _delivery(rows[0]) if rows else None


def due_deliveries(
    store: Store, now_ms: int, policy: WebhookPolicy, limit: int = 100
) -> list[PendingDelivery]:
    """The deliveries the scheduler should try now: pending ones older than the grace
    (their round never ran), failed ones whose back-off has passed, rounds whose claim
    has expired, with attempts left."""
    query = _deliveries().where(alerts.c.attempts < policy.max_attempts).order_by(alerts.c.id)
    drop_unhooked(store)
    with store.read() as conn:
        rows = [dict(r) for r in conn.execute(query.limit(limit * 10)).mappings()]
    due = [found for found in map(_delivery, rows) if _due(found, now_ms, policy)]
    return due[:limit]


def drop_unhooked(store: Store) -> int:
    """Alerts still to be delivered whose monitor has no webhook any more (it was removed):
    delivery ``none``, so they do not stay ``pending`` for ever. How many."""
    m = monitors.c
    unhooked = select(m.name).where(or_(m.webhook_url.is_(None), m.webhook_url == ""))
    with store.write() as conn:
        done = conn.execute(
            update(alerts)
            .where(alerts.c.delivery.in_(("pending", "failed")), alerts.c.monitor.in_(unhooked))
            .values(delivery="none")
        )
    return int(done.rowcount or 0)


def _due(found: PendingDelivery, now_ms: int, policy: WebhookPolicy) -> bool:
    if found.delivery == "pending":
        return bool(now_ms - found.at_ms >= policy.grace * 1000)
    if found.delivery == "sending":
        return _expired(found.claimed_at, now_ms, policy)
    if found.refused:
        return False
    wait = policy.retry_after * 2 ** (max(1, found.rounds) - 1)
    return bool(now_ms - found.at_ms >= wait * 1000)


def _expiry(now_ms: int, policy: WebhookPolicy) -> int:
    """Claims taken before this have expired: one budget, one attempt's timeout and the
    grace ago (their process died; a live round has ended by then)."""
    return now_ms - round((policy.budget + policy.timeout + policy.grace) * 1000)


def _expired(claimed_at: int | None, now_ms: int, policy: WebhookPolicy) -> bool:
    return claimed_at is None or claimed_at < _expiry(now_ms, policy)


def _claim(store: Store, found: PendingDelivery, now_ms: int, policy: WebhookPolicy) -> bool:
    """Take the alert's next round (``sending``, claimed at ``now_ms``) if no live claim
    holds it and no round was taken since it was read: False when another process has
    it (one process's update succeeds)."""
    a = alerts.c
    with store.write() as conn:
        done = conn.execute(
            update(alerts)
            .where(
                a.id == found.alert_id,
                a.delivery.in_(("pending", "failed", "sending")),
                or_(a.claimed_at.is_(None), a.claimed_at < _expiry(now_ms, policy)),
                a.rounds == found.rounds,
                a.attempts < policy.max_attempts,
            )
            .values(delivery="sending", claimed_at=now_ms, rounds=a.rounds + 1)
        )
    return int(done.rowcount or 0) == 1


def _deliveries() -> Any:
    a, m, e = alerts.c, monitors.c, monitor_evaluations.c
    return (
        select(
            a.id,
            a.evaluation_id,
            a.at,
            a.severity,
            a.message,
            a.dedup_key,
            a.delivery,
            a.attempts,
            a.rounds,
            a.claimed_at,
            a.last_error,
            m.name,
            m.kind,
            m.target,
            m.webhook_url,
            e.result,
        )
        .join(monitors, m.name == a.monitor)
        .outerjoin(monitor_evaluations, e.id == a.evaluation_id)
        .where(a.delivery.in_(("pending", "failed", "sending")), m.webhook_url.is_not(None))
    )


def _delivery(row: Mapping[str, Any]) -> PendingDelivery:
    stored = read_json(row["result"])
    report = stored.get("result")
    body = payload(row, row, report if isinstance(report, dict) else {})
    return PendingDelivery(
        alert_id=int(row["id"]),
        monitor=row["name"],
        url=row["webhook_url"],
        body=body,
        attempts=int(row["attempts"]),
        delivery=row["delivery"],
        last_error=row["last_error"],
        rounds=int(row["rounds"] or 0),
        claimed_at=row["claimed_at"],
        at_ms=int(row["at"]),
    )


def record_delivery(
    store: Store, alert_id: int, result: DeliveryResult, claimed_at: int | None = None
) -> str:
    """Add a round's outcome to the alert and end its claim: ``delivered`` or ``failed``
    (retried by the scheduler while attempts are left, unless the webhook refused it: its
    ``last_error`` then says ``not retried``). With ``claimed_at``, only while the round's
    claim still holds the alert (another process took over an expired one: its round
    records). Returns the delivery state."""
    state = "delivered" if result.delivered else "failed"
    error = None
    if not result.delivered:
        refused = _REFUSED if result.refused else ""
        error = f"{refused}{result.last_error or 'no attempt made'}"[:_ERROR_CHARS]
    a = alerts.c
    query = update(alerts).where(a.id == alert_id)
    if claimed_at is not None:
        query = query.where(a.claimed_at == claimed_at)
    values = {"attempts": a.attempts + result.attempts, "claimed_at": None, "last_error": error}
    with store.write() as conn:
        done = conn.execute(query.values(delivery=state, **values))
    if int(done.rowcount or 0) == 0:
        log.warning("alert %d: its round outlived its claim, taken over meanwhile", alert_id)
    elif result.delivered:
        log.info("alert %d: delivered to its webhook (%d attempts)", alert_id, result.attempts)
    else:
        log.warning("alert %d: webhook delivery failed: %s", alert_id, result.last_error)
    return state


def deliver(store: Store, alert_id: int, policy: WebhookPolicy, **post_options: Any) -> str | None:
    """One delivery round for an alert still to be delivered; its new state, or None when
    there was nothing to do (delivered already, no webhook, no attempts left, refused, or
    another process's round under way)."""
    found = pending_delivery(store, alert_id)
    if found is None or found.attempts >= policy.max_attempts or found.refused:
        return None
    now = now_ms()
    if not _claim(store, found, now, policy):
        return None
    result = post(found.url, found.body, policy, **post_options)
    return record_delivery(store, alert_id, result, now)
