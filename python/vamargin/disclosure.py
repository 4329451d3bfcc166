"""The client disclosure sheet, generated from the configuration (so it can never
disagree with what the engine computes): eligible collateral and haircuts, call and
liquidation levels, deadlines and their 24×7 basis, interest and day count, fees, and the
perpetuals' leverage brackets. As a dict (JSON-ready) or Markdown."""

from __future__ import annotations

import json
from typing import Any

from vamargin.config import RiskConfig


def disclosure(config: RiskConfig) -> dict[str, Any]:
    """The sheet as plain data."""
    policy = config.policy
    collateral = []
    for asset in config.assets:
        if not asset.eligible:
            continue
        initial, maintenance, liquidation = asset.haircuts
        collateral.append(
            {
                "asset": asset.symbol,
                "class": asset.asset_class,
                "initial_haircut": initial,
                "maintenance_haircut": maintenance,
                "liquidation_haircut": liquidation,
                "max_loan_to_value": round(1.0 - initial, 12),
                "margin_call_ltv": round(1.0 - maintenance, 12),
                "forced_liquidation_ltv": round(1.0 - liquidation, 12),
                "size_tiers": [{"floor": b.floor, "factor": b.factor} for b in asset.size_tiers],
                "capital_haircut": asset.effective_capital_haircut,
                "forced_sale_fee": asset.sale_fee,
            }
        )
    loans = [
        {
            "currency": asset.symbol,
            "annual_rate": asset.annual_rate,
            "day_count": asset.day_count,
            "accrual": "daily, rounded up to the minor unit",
            "minor_unit": asset.minor_unit,
        }
        for asset in config.assets
        if asset.borrowable
    ]
    perpetuals = [
        {
            "instrument": perp.symbol,
            "kind": perp.kind,
            "settle": perp.settle,
            "contract_size": perp.contract_size,
            "professional_investors_only": perp.professional_only,
            "liquidation_fee": perp.liquidation_fee,
            "funding_interval_hours": perp.funding.interval_hours,
            "funding_rate_cap": perp.funding.cap,
            "brackets": [
                {"floor": t.floor, "maintenance_margin_rate": t.mmr, "max_leverage": t.max_leverage}
                for t in perp.tiers
            ],
        }
        for perp in config.perpetuals
    ]
    return {
        "reporting_currency": config.reporting_currency,
        "eligible_collateral": collateral,
        "va_collateral_assets": list(policy.va_assets),
        "va_haircut_floor": policy.va_haircut_floor,
        "margin_call": {
            "trigger": "equity falls below the maintenance requirement",
            "restores_to": f"the {policy.call_target} requirement",
            "deadline_hours": policy.call_deadline_hours,
            "deadline_basis": "calendar hours, 24×7 (virtual assets trade around the clock)",
            "further_advances": "none while a call is open; no new perpetual positions either",
        },
        "forced_liquidation": {
            "trigger": (
                "equity falls below the liquidation requirement, or a call passes its deadline"
            ),
            "stops_at": f"maintenance × (1 + {policy.liquidation_buffer})",
        },
        "loans": loans,
        "perpetuals": perpetuals,
        "firm_limits": {
            "max_loans_to_capital": policy.max_loans_to_capital,
            "max_client_share": policy.max_client_share,
            "max_collateral_share": policy.max_collateral_share,
        },
    }


def disclosure_json(config: RiskConfig) -> str:
    return json.dumps(disclosure(config), indent=2, ensure_ascii=False)


def _pct(value: float) -> str:
    return f"{value * 100:g}%"


def disclosure_markdown(config: RiskConfig) -> str:
    """The sheet as Markdown, for the client agreement's schedule."""
    sheet = disclosure(config)
    call = sheet["margin_call"]
    lines = [
        "# Margin financing and perpetuals: key terms",
        "",
        f"All amounts in {sheet['reporting_currency']} unless stated.",
        "",
        "## Eligible collateral",
        "",
        "| asset | class | haircut (initial / maintenance / liquidation) | max LTV | call at LTV "
        "| forced sale at LTV | forced-sale fee |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in sheet["eligible_collateral"]:
        lines.append(
            f"| {c['asset']} | {c['class']} | {_pct(c['initial_haircut'])} / "
            f"{_pct(c['maintenance_haircut'])} / {_pct(c['liquidation_haircut'])} | "
            f"{_pct(c['max_loan_to_value'])} | {_pct(c['margin_call_ltv'])} | "
            f"{_pct(c['forced_liquidation_ltv'])} | {_pct(c['forced_sale_fee'])} |"
        )
    lines += [
        "",
        f"Only {', '.join(sheet['va_collateral_assets'])} are accepted as virtual-asset "
        f"collateral, at a haircut of at least {_pct(sheet['va_haircut_floor'])}.",
        "",
        "## Margin calls and forced liquidation",
        "",
        f"- A call is made when {call['trigger']}; it restores {call['restores_to']}.",
        f"- Deadline: {call['deadline_hours']:g} hours, counted in {call['deadline_basis']}.",
        f"- Further advances: {call['further_advances']}.",
        f"- Forced liquidation when {sheet['forced_liquidation']['trigger']}; it stops at "
        f"{sheet['forced_liquidation']['stops_at']}.",
        "",
        "## Interest on margin loans",
        "",
        "| currency | annual rate | day count | accrual |",
        "|---|---|---|---|",
    ]
    for loan in sheet["loans"]:
        lines.append(
            f"| {loan['currency']} | {_pct(loan['annual_rate'])} | {loan['day_count']} | "
            f"{loan['accrual']} |"
        )
    lines += ["", "## Perpetual contracts (professional investors only)", ""]
    for perp in sheet["perpetuals"]:
        brackets = "; ".join(
            f"from {b['floor']:,.0f}: MMR {_pct(b['maintenance_margin_rate'])}, "
            f"≤ {b['max_leverage']:g}×"
            for b in perp["brackets"]
        )
        lines.append(
            f"- **{perp['instrument']}** ({perp['kind']}, settles in {perp['settle']}): "
            f"liquidation fee {_pct(perp['liquidation_fee'])}, funding every "
            f"{perp['funding_interval_hours']:g} h (cap ±{_pct(perp['funding_rate_cap'])}); "
            f"brackets: {brackets}."
        )
    return "\n".join(lines) + "\n"
