"""The README's tour must run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tour_runs_and_shows_what_it_claims() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text("utf-8"), re.S)
    assert blocks, "README has no python example"
    namespace: dict[str, object] = {}
    for block in blocks:  # later blocks continue the first one's session
        exec(compile(block, str(README), "exec"), namespace)
    result = namespace["result"]
    assert list(result.accounts["status"]) == ["normal", "normal"]  # type: ignore[attr-defined]
    amounts = namespace["vm"].calc.maintenance_amounts(  # type: ignore[attr-defined]
        [(0, 0.004, 125), (50_000, 0.005, 100), (250_000, 0.01, 50)]
    )
    assert amounts == [0.0, 50.0, 1300.0]
    decision = namespace["decision"]
    assert (decision.accepted, decision.reason) == (True, "ok")  # type: ignore[attr-defined]
    assert namespace["run"].totals_by_asset() == {}  # type: ignore[attr-defined]
    assert len(namespace["calls"]) == 0  # type: ignore[arg-type]
    # 400 000 HKD at 6.8% for a day: 74.5205… → 74.53 HKD.
    assert namespace["interest"]["interest"].tolist() == [7_453]  # type: ignore[index]
    report = namespace["report"]
    # Loan 51 400 USD against capital 50 000; BTC counts for nothing in capital.
    assert report.loans_to_capital == 51_400 / 50_000  # type: ignore[attr-defined]
    assert report.capital_uncovered == 51_400  # type: ignore[attr-defined]
    assert str(namespace["vm"].calc.interest(10_000, 0.08906, 7)) == "17.08"  # type: ignore[attr-defined]


def test_readme_starts_with_the_two_setup_commands() -> None:
    text = README.read_text("utf-8")
    commands = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    assert commands[0].endswith("vamargin demo")
    assert commands[1].endswith("pytest -q")
    ci = (README.parent / ".ci" / "run").read_text("utf-8")
    assert commands[1] in ci  # CI runs the README's test command verbatim
