"""What an experiment's results decide: which arm wins (to promote), and whether it should
stop now (the planned sample reached, or a guardrail broken).

The planned sample is ``power.sample_size`` for the design's ``mde``, ``alpha`` and
``power`` over the arms that get traffic. For a proportion KPI ``mde`` is the absolute
difference in rates and the baseline is the control's observed rate; for a mean or a ratio
KPI ``mde`` is Cohen's d (the t-test plan, as ``plinth ab power`` computes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plinth.abtests.power import PowerResult, sample_size
from plinth.abtests.results import Results
from plinth.abtests.types import Arm, Experiment, KpiKind, Status
from plinth.errors import Conflict, InvalidArgument
from plinth.registry.types import ModelVersion

_JSON = {"ser_json_inf_nan": "strings"}


@dataclass(frozen=True)
class CheckOutcome:
    """What ``check_abtest`` decided. ``stopped``: this check stopped the experiment, for
    ``reasons`` (also its recorded reason); otherwise nothing changed. ``notes`` say what
    could not be judged and why (no units yet, a control rate of 0, ...)."""

    __pydantic_config__ = _JSON

    experiment: str
    status: Status
    stopped: bool
    reasons: list[str] = field(default_factory=list)
    planned_per_arm: int | None = None
    units_by_arm: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Promotion:
    """An arm's model moved to PRODUCTION: the experiment as recorded afterwards (stopped)
    and the model version as the registry holds it now."""

    __pydantic_config__ = _JSON

    experiment: Experiment
    arm: str
    model_version: ModelVersion


def significant_winner(exp: Experiment, results: Results) -> str | None:
    """The treatment arm with the largest positive primary lift among those whose
    Holm-adjusted p-value is below the design's alpha; None if there is none."""
    winners = [
        (comparison.absolute_lift, arm)
        for arm, comparison in results.primary.items()
        if comparison.absolute_lift > 0
        and arm in results.adjusted
        and results.adjusted[arm].adjusted_p_value < exp.alpha
    ]
    return max(winners)[1] if winners else None


def no_winner_message(exp: Experiment, results: Results) -> str:
    shown = ", ".join(
        f"{arm}: lift {c.absolute_lift:+.4g}, adjusted p "
        f"{results.adjusted[arm].adjusted_p_value:.3g}"
        for arm, c in results.primary.items()
        if arm in results.adjusted
    )
    return (
        f"A/B experiment {exp.name!r} has no significant winner (a positive lift on "
        f"{exp.primary.name} with a Holm-adjusted p below alpha {exp.alpha:g})"
        + (f": {shown}" if shown else ": no arm has been compared with control yet")
        + "; name the arm to promote it anyway"
    )


def promotable_arm(exp: Experiment, name: str) -> Arm:
    """The arm ``name`` of ``exp``, which must serve a registered model."""
    found = next((a for a in exp.arms if a.name == name), None)
    if found is None:
        raise InvalidArgument(
            f"arm: A/B experiment {exp.name!r} has no arm {name!r} "
            f"(its arms are {', '.join(a.name for a in exp.arms)})"
        )
    if found.model_uri is None:
        raise InvalidArgument(
            f"arm: {name!r} serves {found.url}, not a registered model: there is nothing "
            "to promote in the registry"
        )
    return found


def check_promotable(exp: Experiment) -> None:
    if exp.status is Status.DRAFT:
        raise Conflict(
            f"cannot promote from A/B experiment {exp.name!r}: it has not started, so it has "
            "no results"
        )


def stop_reasons(
    exp: Experiment, results: Results
) -> tuple[list[str], PowerResult | None, list[str]]:
    """Why ``exp`` should stop now (empty: it should not), its planned sample if one could
    be computed, and notes on what could not be judged."""
    notes: list[str] = []
    reasons = breached_guardrails(results)
    plan = planned_sample(exp, results, notes)
    if plan is not None:
        active = [a.name for a in exp.arms if a.share > 0]
        units = {arm: results.units_by_arm.get(arm, 0) for arm in active}
        if all(n >= plan.per_arm for n in units.values()):
            counts = ", ".join(f"{arm} {n:,}" for arm, n in units.items())
            reasons.append(
                f"planned sample reached: every arm has at least {plan.per_arm:,} units "
                f"({counts}; {plan.method})"
            )
    return reasons, plan, notes


def breached_guardrails(results: Results) -> list[str]:
    """One line per guardrail whose harm is established (the whole interval past its
    bound), not merely possible: an automatic stop must not fire on early noise."""
    return [
        f"guardrail {metric} broken in arm {arm}: {check.evidence}"
        for metric, arms in results.guardrails.items()
        for arm, check in arms.items()
        if check.breached and check.significant
    ]


def planned_sample(exp: Experiment, results: Results, notes: list[str]) -> PowerResult | None:
    active = [a for a in exp.arms if a.share > 0]
    if len(active) < 2:
        notes.append("planned sample: fewer than two arms get traffic")
        return None
    try:
        if exp.primary.kind is KpiKind.PROPORTION:
            control = results.summaries.get(exp.control.name)
            if control is None:
                notes.append("planned sample: the control arm has no units yet")
                return None
            return sample_size(
                "proportions", exp.mde, exp.alpha, exp.power, len(active), control.estimate
            )
        return sample_size("means", exp.mde, exp.alpha, exp.power, len(active))
    except InvalidArgument as exc:
        notes.append(f"planned sample: {exc.message}")
        return None
    except (ValueError, ArithmeticError) as exc:
        # a plan that cannot be computed must not keep a broken guardrail from stopping
        # the experiment (``stop_reasons`` has its guardrails already)
        notes.append(f"planned sample: none could be computed for mde {exp.mde!r} ({exc})")
        return None
