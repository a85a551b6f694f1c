"""From a parsed mail to a verdict that explains itself.

:class:`Decider` holds what decides (rules, model, guard policy, thresholds)
and turns one :class:`ParsedMail` into a :class:`Decision`: the new text and
what was split off, every rule hit with its weight and matched text, the model
probability as the weighted symbol ``MODEL_ACUTE``, the total score against the
threshold, the label, and whether an auto-reply may go out (and if not, why).
Pure: no database, no network, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .classifier import TrainedModel, model_text
from .guards import GuardPolicy, GuardResult, check
from .mail import ParsedMail
from .rules import Hit, MatchContext, RuleSet
from .text import SplitText, decision_subject, language, new_text

MODEL_SYMBOL = "MODEL_ACUTE"


@dataclass(frozen=True)
class Decision:
    label: str  # acute | preparation | automated
    score: float
    threshold: float
    acute_probability: float | None
    hits: tuple[Hit, ...]
    guard: GuardResult
    text: SplitText
    language: str
    forced_by: str | None = None
    top_terms: tuple[tuple[str, float], ...] = ()
    rules_hash: str = ""
    model_version: str = ""
    acknowledge_preparation: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def auto_reply(self) -> bool:
        """Would this mail be answered (before rate limits, which need the database)?"""
        answered = self.label == "acute" or (self.label == "preparation" and self.acknowledge_preparation)
        return answered and self.guard.may_reply

    @property
    def auto_reply_blocked_by(self) -> str | None:
        if self.label == "preparation" and not self.acknowledge_preparation:
            return "label is preparation; only acute mail is answered (autoreply.acknowledge_preparation is off)"
        return self.guard.blocked_by  # acute: None unless a guard objects; automated: the machine markers

    @property
    def rule_symbols(self) -> list[str]:
        return [h.symbol for h in self.hits]


@dataclass(frozen=True)
class DecisionInputs:
    """What the rules and the model read of one mail: the same for deciding, training and evaluating."""

    split: SplitText
    context: MatchContext
    model_text: str


def decision_inputs(mail: ParsedMail) -> DecisionInputs:
    split = new_text(mail)
    subject = decision_subject(mail.subject)
    ctx = MatchContext(
        subject=subject,
        body=split.new,
        quoted=split.quoted,
        headers=mail.headers,
        sender_domain=mail.from_.domain.lower() if mail.from_ else "",
    )
    return DecisionInputs(split, ctx, model_text(subject, split.new))


class Decider:
    def __init__(
        self,
        rules: RuleSet,
        model: TrainedModel | None,
        policy: GuardPolicy,
        *,
        threshold: float,
        model_weight: float,
        acknowledge_preparation: bool = False,
    ) -> None:
        self.acknowledge_preparation = acknowledge_preparation
        self.rules = rules
        self.model = model
        self.policy = policy
        self.threshold = threshold
        self.model_weight = model_weight

    @property
    def model_version(self) -> str:
        return self.model.version if self.model else "none"

    def with_rules(self, rules: RuleSet, policy: GuardPolicy | None = None) -> Decider:
        """A new Decider with ``rules`` (and ``policy``); a reload swaps whole Deciders, never mutates one."""
        return Decider(
            rules,
            self.model,
            policy or self.policy,
            threshold=self.threshold,
            model_weight=self.model_weight,
            acknowledge_preparation=self.acknowledge_preparation,
        )

    def with_model(self, model: TrainedModel | None) -> Decider:
        """A new Decider with another model (a backtest of a candidate model)."""
        return Decider(
            self.rules,
            model,
            self.policy,
            threshold=self.threshold,
            model_weight=self.model_weight,
            acknowledge_preparation=self.acknowledge_preparation,
        )

    def decide(self, mail: ParsedMail, *, explain: bool = False) -> Decision:
        guard = check(mail, self.policy)
        inputs = decision_inputs(mail)
        split, ctx = inputs.split, inputs.context
        hits = self.rules.evaluate(ctx)
        probability: float | None = None
        terms: tuple[tuple[str, float], ...] = ()
        if self.model is not None:
            text = inputs.model_text
            probability = self.model.acute_probability([text])[0]
            contribution = round(self.model_weight * (2.0 * probability - 1.0), 3)
            hits.append(
                Hit(MODEL_SYMBOL, contribution, f"learned model: probability {probability:.2f} that this is acute", ())
            )
            if explain:
                terms = tuple(self.model.top_terms(text))
        score = round(sum(h.weight for h in hits), 3)
        forced = next((h for h in hits if h.force), None)
        if guard.automated:
            label = "automated"
        elif forced is not None:
            label = str(forced.force)
        else:
            label = "acute" if score >= self.threshold else "preparation"
        return Decision(
            label=label,
            score=score,
            threshold=self.threshold,
            acute_probability=probability,
            hits=tuple(hits),
            guard=guard,
            text=split,
            language=language(split.new or mail.subject),
            forced_by=forced.symbol if forced else None,
            top_terms=terms,
            rules_hash=self.rules.hash,
            model_version=self.model_version,
            acknowledge_preparation=self.acknowledge_preparation,
        )
