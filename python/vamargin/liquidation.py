"""Liquidation results (SPEC §8): the queue with its close plans, and the ADL queues.

The queue holds every account in ``liquidation`` status and every isolated position below
its maintenance margin, ordered by health (equity / liquidation requirement, or margin
balance / MM for an isolated position) ascending, then deficit descending, then
``account_id``. Each entry's plan reduces positions and sells holdings, most requirement
freed per unit of fee first, until equity is back to maintenance × (1 +
``policy.liquidation_buffer``) after fees, or closes everything when that cannot be
reached. Neither the order nor the plans read the affiliate flag.
"""

from __future__ import annotations

from collections.abc import Mapping

from vamargin.tables import Column, Table


class LiquidationQueue(Table):
    """The queue, one row per entry in order: ``rank`` (1 first), ``account_id``,
    ``scope`` (``account`` or ``isolated``), ``instrument`` (isolated entries),
    ``position_row`` (−1 for accounts), ``health``, ``deficit``, ``bankrupt``,
    ``insurance_draw``, ``close_value``, ``fees``, ``full_close``, ``plan_steps``.

    ``plan`` has one row per step: ``rank``, ``account_id``, ``kind`` (``position`` or
    ``holding``), ``row`` (in the positions or holdings table), ``symbol``, ``fraction``
    closed, ``quantity`` (the reducing trade: contracts or units), ``value`` and ``fee``
    (reporting currency).
    """

    def __init__(self, columns: Mapping[str, Column], plan: Table) -> None:
        super().__init__(columns)
        self.plan = plan
