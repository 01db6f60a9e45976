"""Embedded mode: A/B assignment and prediction inside the caller's process, for those who
would rather not run ``plinth router``::

    arm = plinth.abtests.assign("churn-v3", "user-42")

    with plinth.abtests.Predictor("churn-v3") as predictor:
        prediction, arm, version = predictor.predict("user-42", [{"age": 41, "spend": 2.5}])

The same experiments, read through a Plinth client (the default one: ``PLINTH_URI``, else
the local store) and kept for ``refresh_seconds`` as the router keeps its view, so an
assignment costs a hash and a list lookup; a failing read keeps the last view. The same
assignment (``assignment.assign_arm``): a unit gets the same arm here as through any router.
The same exposure log (``traffic.ExposureLog`` of the client's store, a remote client's
server's included: ``exposures_remote``, as ``plinth router`` writes it), so results count
both alike.

``Predictor`` loads every arm's model (``model_uri``; an arm that is only a service URL
belongs behind ``plinth router``) as ``plinth serve`` does: verified, following an alias
or stage (hot swap), enriched from the online store when the model was trained on a
feature view. An arm whose model fails falls back to control (``fallbacks``, and the
exposure's outcome ``fallback:server_error``); input a model refuses is the caller's
``InvalidArgument``, not logged. Shadow mode: control answers; a challenger unit's inputs
are predicted by the challenger on a background thread (``shadow_calls``, ``on_shadow``),
never returned, and the exposure records control.
"""

from __future__ import annotations

import logging
import numbers
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from plinth.abtests.assignment import assign_arm
from plinth.abtests.buckets import check_unit_id
from plinth.abtests.exposures_remote import exposure_log_for
from plinth.abtests.traffic import Exposure, ExposureLog
from plinth.abtests.types import Arm, Experiment, Mode, Unit
from plinth.client import default_client
from plinth.errors import InvalidArgument, NotFound, Unavailable

if TYPE_CHECKING:
    from plinth.client import Client
    from plinth.serving.model import ServedModel
    from plinth.serving.swap import ModelHolder

log = logging.getLogger("plinth.abtests")

REFRESH_SECONDS = 2.0  # as plinth router's --refresh-seconds
_MAX_SHADOW_CALLS = 1_000  # queued at once; past it a mirror is skipped (counted)


class ExperimentCache:
    """Experiments read through ``read`` (``get_abtest``), each kept for ``seconds``. A
    read that fails (``Unavailable``: the store or the server is down) keeps the last view
    for another period; an experiment never seen, or gone, raises."""

    def __init__(
        self,
        read: Callable[[str], Experiment],
        seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.seconds = seconds
        self.clock = clock
        self._seen: dict[str, tuple[float, Experiment]] = {}

    def get(self, name: str) -> Experiment:
        now = self.clock()
        seen = self._seen.get(name)
        if seen is not None and now - seen[0] < self.seconds:
            return seen[1]
        try:
            exp = self.read(name)
        except NotFound:
            self._seen.pop(name, None)
            raise
        except Unavailable as e:
            if seen is None:
                raise
            log.warning("A/B experiment %s: keeping the last view: %s", name, e)
            exp = seen[1]
        self._seen[name] = (now, exp)
        return exp


_default: tuple[Client, ExperimentCache] | None = None
_default_lock = threading.Lock()


def _default_cache() -> ExperimentCache:
    global _default
    client = default_client()
    with _default_lock:
        if _default is None or _default[0] is not client:
            _default = (client, ExperimentCache(client.abtests.get_abtest))
        return _default[1]


def assign(experiment: str, unit_id: str | int) -> str:
    """The arm of ``experiment`` that serves ``unit_id``: exactly the router's answer
    (control when the experiment is not running or the unit is outside it). Logs nothing:
    ``Predictor`` logs exposures, or the caller's own code decides what the unit sees."""
    return assign_arm(_default_cache().get(experiment), unit_text(unit_id))[0]


def unit_text(unit_id: object) -> str:
    """A unit's id as the router hashes it: text as it is, an integer (numpy's too) in
    decimal; checked as every unit id is (``buckets.check_unit_id``)."""
    if isinstance(unit_id, str):
        return check_unit_id(unit_id, "unit_id")
    if isinstance(unit_id, numbers.Integral) and not isinstance(unit_id, bool):
        return check_unit_id(str(int(unit_id)), "unit_id")
    raise InvalidArgument(f"unit_id: give the unit's id as text or an integer, got {unit_id!r:.80}")


MAX_REQUEST_ID_CHARS = 500


def _request_id(given: object) -> str:
    if given is None or given == "":
        return uuid.uuid4().hex
    if not isinstance(given, str):
        raise InvalidArgument(f"request_id: text, got {given!r:.80}")
    if len(given) > MAX_REQUEST_ID_CHARS:
        raise InvalidArgument(
            f"request_id: at most {MAX_REQUEST_ID_CHARS} characters, got {len(given):,}"
        )
    return check_unit_id(given, "request_id")  # it is the unit of an experiment by request


class Prediction(NamedTuple):
    prediction: Any  # what the model returned: a numpy array, or the pandas object
    arm: str  # the arm that answered
    model_version: int  # of the model that answered


@dataclass(frozen=True)
class ShadowPrediction:
    experiment: str
    arm: str
    unit: str
    request_id: str
    outcome: str  # ok, or server_error (the model raised)
    latency_ms: float
    prediction: Any  # None when it failed


class Predictor:
    """Predictions of an A/B experiment's arms, in process (see the module's docstring).
    Every arm's model loads here, so a bad URI fails now. ``close()`` (or ``with``) flushes
    the exposures. ``poll_seconds``: how often a model URI is re-resolved (0: never)."""

    def __init__(
        self,
        experiment: str,
        *,
        client: Client | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
        poll_seconds: float = 2.0,
        trust_pickle: bool = False,
        exposure_log: ExposureLog | None = None,
        on_shadow: Callable[[ShadowPrediction], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client or default_client()
        self.experiment = experiment
        self.experiments = ExperimentCache(self.client.abtests.get_abtest, refresh_seconds, clock)
        self.poll_seconds = poll_seconds
        self.trust_pickle = trust_pickle
        self.on_shadow = on_shadow
        self.fallbacks: Counter[str] = Counter()  # by arm
        self.shadow_calls: Counter[tuple[str, str]] = Counter()  # by (arm, outcome)
        self._holders: dict[str, ModelHolder] = {}  # by model URI
        self._lock = threading.Lock()
        self._closed = False
        exp = self.experiments.get(experiment)
        try:
            for arm in exp.arms:
                self._holder(exp, arm.name)
        except BaseException:
            self._close_holders()
            raise
        self._owns_log = exposure_log is None
        self.exposures = exposure_log or exposure_log_for(self.client)
        self._shadows = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plinth-shadow")
        self._queued = 0

    def predict(
        self, unit_id: str | int | None, inputs: Any, *, request_id: str | None = None
    ) -> Prediction:
        """The prediction of the arm that serves ``unit_id`` for ``inputs`` (what
        ``plinth serve`` takes: records, one record, columns, or a DataFrame), with that
        arm and its model version; the exposure is logged when the unit is in the
        experiment. An experiment by request assigns by ``request_id`` (a new one when
        not given) and needs no ``unit_id``."""
        if self._closed:
            raise InvalidArgument(f"this predictor of {self.experiment!r} is closed")
        arrived_ms = int(time.time() * 1000)
        exp = self.experiments.get(self.experiment)
        request_id = _request_id(request_id)
        unit = request_id if exp.unit is Unit.REQUEST else unit_text(unit_id)
        arm, exposed = assign_arm(exp, unit)
        control = exp.control.name
        served = control if exp.mode is Mode.SHADOW else arm
        started = time.perf_counter()
        outcome = "ok"
        try:
            result, model = self._call(exp, served, inputs)
            latency_ms = (time.perf_counter() - started) * 1000
        except InvalidArgument:
            raise  # the caller's input, as the router returns an arm's 4xx: nothing logged
        except Exception as e:
            if served == control:
                raise
            latency_ms = (time.perf_counter() - started) * 1000
            log.warning("A/B experiment %s: arm %s failed, control answers: %r", exp.name, arm, e)
            with self._lock:
                self.fallbacks[served] += 1
            outcome, served = "fallback:server_error", control
            result, model = self._call(exp, control, inputs)
        if exp.mode is Mode.SHADOW and arm != control:
            self._mirror(exp, arm, unit, request_id, inputs)
        if exposed:
            shown = control if exp.mode is Mode.SHADOW else arm
            version = str(model.version.version)
            self.exposures.record(
                Exposure(
                    exp.name, shown, unit, request_id, version, arrived_ms, latency_ms, outcome
                )
            )
        return Prediction(result, served, model.version.version)

    def close(self) -> None:
        """Finish the shadow calls, stop following the models, write the exposures."""
        if self._closed:
            return
        self._closed = True
        self._shadows.shutdown(wait=True)
        self._close_holders()
        if self._owns_log:
            self.exposures.close()
        else:
            self.exposures.flush()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, exp: Experiment, arm: str, inputs: Any) -> tuple[Any, ServedModel]:
        served = self._holder(exp, arm).current  # this call's version, whatever swaps
        return predict_with(self.client, served, inputs), served

    def _holder(self, exp: Experiment, name: str) -> ModelHolder:
        """The model of arm ``name``, loaded on first use (an arm added since is loaded by
        the first prediction that needs it)."""
        arm = next(a for a in exp.arms if a.name == name)
        uri = _model_uri(exp, arm)
        holder = self._holders.get(uri)
        if holder is not None:
            return holder
        from plinth.serving.swap import ModelHolder

        with self._lock:
            holder = self._holders.get(uri)
            if holder is None:
                holder = ModelHolder(
                    self.client,
                    uri,
                    poll_seconds=self.poll_seconds,
                    trust_pickle=self.trust_pickle,
                )
                self._holders[uri] = holder
        return holder

    def _mirror(self, exp: Experiment, arm: str, unit: str, request_id: str, inputs: Any) -> None:
        with self._lock:
            if self._queued >= _MAX_SHADOW_CALLS:
                self.shadow_calls[(arm, "skipped")] += 1
                return
            self._queued += 1
        try:
            future: Future[None] = self._shadows.submit(
                self._shadow, exp, arm, unit, request_id, inputs
            )
        except RuntimeError:  # closed meanwhile
            with self._lock:
                self._queued -= 1
                self.shadow_calls[(arm, "skipped")] += 1
            return
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._queued -= 1

    def _shadow(self, exp: Experiment, arm: str, unit: str, request_id: str, inputs: Any) -> None:
        started = time.perf_counter()
        try:
            result: Any = self._call(exp, arm, inputs)[0]
            outcome = "ok"
        except Exception as e:
            result, outcome = None, "server_error"
            log.debug("A/B experiment %s: shadow arm %s failed: %r", exp.name, arm, e)
        latency_ms = (time.perf_counter() - started) * 1000
        with self._lock:
            self.shadow_calls[(arm, outcome)] += 1
        if self.on_shadow is not None:
            shadow = ShadowPrediction(exp.name, arm, unit, request_id, outcome, latency_ms, result)
            try:
                self.on_shadow(shadow)
            except Exception as e:  # someone else's hook: never the predictor's failure
                log.warning("A/B experiment %s: the shadow hook failed: %r", exp.name, e)

    def _close_holders(self) -> None:
        for holder in self._holders.values():
            holder.close()


def _model_uri(exp: Experiment, arm: Arm) -> str:
    if arm.model_uri is None:
        raise InvalidArgument(
            f"arm {arm.name!r} of A/B experiment {exp.name!r} is the service {arm.url}, not a "
            "model: embedded mode loads every arm's model in process (model_uri); route "
            "service arms with plinth router"
        )
    return arm.model_uri


def predict_with(client: Client, served: ServedModel, inputs: Any) -> Any:
    """``served``'s prediction for ``inputs`` (a body ``plinth serve`` takes, as Python
    values, or a DataFrame), enriched from the online store as ``plinth serve`` does; input
    the model refuses is InvalidArgument."""
    from plinth.serving import payload
    from plinth.serving.model import enrich_online

    frame = hasattr(inputs, "columns") and hasattr(inputs, "to_dict")  # a DataFrame
    data: Any = inputs if frame else payload.records(inputs)
    if served.view is not None:
        columns = inputs.to_dict("list") if frame else data
        if served.needs_enrichment(columns.keys()):
            rows = payload.to_rows(columns)
            enriched = enrich_online(client.feature_store(), served.view, rows, served.input_names)
            columns = payload.to_columns(enriched)
        data = columns
    try:
        return served.predictor.predict(data)
    except (ValueError, TypeError) as e:  # the model refused these values
        raise InvalidArgument(
            f"model {served.name} v{served.version.version} refused the input: {e}"
        ) from e
