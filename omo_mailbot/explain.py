"""A dry run of the whole decision for one mail, as data: what ``explain`` prints."""

from __future__ import annotations

from typing import Any

from .mail import ParsedMail
from .verdict import Decider, Decision


def explain_record(decision: Decision, mail: ParsedMail) -> dict[str, Any]:
    return {
        "message_id": mail.message_id,
        "subject": mail.subject,
        "label": decision.label,
        "acute_probability": None if decision.acute_probability is None else round(decision.acute_probability, 4),
        "score": decision.score,
        "threshold": decision.threshold,
        "auto_reply": decision.auto_reply,
        "auto_reply_blocked_by": None if decision.auto_reply else decision.auto_reply_blocked_by,
        "hits": [h.symbol for h in decision.hits if h.symbol != "MODEL_ACUTE"],
        "contributions": [h.as_dict() for h in decision.hits],
        "forced_by": decision.forced_by,
        "guard_reasons": [
            {"code": r.code, "detail": r.detail, "automated": r.automated} for r in decision.guard.reasons
        ],
        "reply_to": decision.guard.reply_to.addr if decision.guard.reply_to else None,
        "language": decision.language,
        "top_terms": [{"term": t, "weight": w} for t, w in decision.top_terms],
        "new_text_chars": len(decision.text.new),
        "stripped_chars": len(decision.text.stripped),
        "is_forward": decision.text.is_forward,
        "rules_hash": decision.rules_hash,
        "model_version": decision.model_version,
    }


def explain_mail(decider: Decider, mail: ParsedMail) -> dict[str, Any]:
    return explain_record(decider.decide(mail, explain=True), mail)


def render_text(record: dict[str, Any]) -> str:
    lines = [
        f"== {record.get('path', '')}",
        f"   subject:   {record['subject']}",
        f"   verdict:   {record['label'].upper()}  score {record['score']:+.2f} against threshold "
        f"{record['threshold']:+.2f}" + (f"  (forced by {record['forced_by']})" if record["forced_by"] else ""),
    ]
    if record["acute_probability"] is not None:
        lines.append(f"   model:     P(acute) = {record['acute_probability']:.3f}")
    lines.append("   contributions:")
    for c in record["contributions"]:
        matched = f'  matched: "{", ".join(c["matched"])}"' if c["matched"] else ""
        lines.append(f"     {c['weight']:+6.2f}  {c['symbol']:<24} {c['description']}{matched}")
    if record["top_terms"]:
        terms = ", ".join(f"{t['term']} ({t['weight']:+.2f})" for t in record["top_terms"])
        lines.append(f"   model terms: {terms}")
    for r in record["guard_reasons"]:
        lines.append(f"   guard:     {r['code']}: {r['detail']}" + ("  [machine mail]" if r["automated"] else ""))
    if record["auto_reply"]:
        lines.append(f"   auto-reply: yes, to {record['reply_to']}")
    else:
        lines.append(f"   auto-reply: no — {record['auto_reply_blocked_by']}")
    lines.append(
        f"   text:      {record['new_text_chars']} chars decided on, {record['stripped_chars']} chars of "
        f"quotes/signature set aside" + (" (forward: the forwarded mail counts)" if record["is_forward"] else "")
    )
    lines.append(f"   rules {record['rules_hash'][:12]}  model {record['model_version']}")
    return "\n".join(lines)
