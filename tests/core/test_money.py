from decimal import Decimal

import pytest
from sqlalchemy import Column, MetaData, String, Table, insert, select
from sqlalchemy.exc import StatementError

from hostplane.core.db.types import Money
from hostplane.core.money import MoneyError, to_json_number, to_major, to_minor
from hostplane.core.runtime import Runtime


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("9.99", "USD", 999),
        ("100", "INR", 10000),
        ("0.01", "EUR", 1),
        (Decimal("1500"), "JPY", 1500),
        (500, "COINS", 500),
    ],
)
def test_major_amounts_become_exact_minor_units(amount: str, currency: str, minor: int) -> None:
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency"),
    [("9.999", "USD"), ("1.5", "JPY"), ("abc", "USD"), ("NaN", "USD"), (1.5, "USD")],
)
def test_inexact_or_float_amounts_are_refused(amount: object, currency: str) -> None:
    with pytest.raises(MoneyError):
        to_minor(amount, currency)  # type: ignore[arg-type]


def test_minor_units_render_with_the_currency_decimals() -> None:
    assert to_major(999, "USD") == Decimal("9.99")
    assert to_json_number(999, "USD") == 9.99
    assert to_json_number(500, "COINS") == 500
    assert isinstance(to_json_number(500, "COINS"), int)


async def test_money_column_round_trips_and_refuses_floats(runtime: Runtime) -> None:
    meta = MetaData()
    table = Table(
        "money_probe", meta, Column("id", String(10), primary_key=True), Column("amount", Money())
    )
    async with runtime.engine.begin() as connection:
        await connection.run_sync(meta.create_all)
    try:
        async with runtime.engine.begin() as connection:
            await connection.execute(insert(table).values(id="a", amount=2**40 + 7))
            assert (await connection.execute(select(table.c.amount))).scalar_one() == 2**40 + 7
        async with runtime.engine.begin() as connection:
            with pytest.raises(StatementError, match="minor units"):
                await connection.execute(insert(table).values(id="b", amount=9.99))
    finally:
        async with runtime.engine.begin() as connection:
            await connection.run_sync(meta.drop_all)
