-- Invariant: the last hourly quantity of each account and symbol equals the sum of the signed quantities of
-- its fills up to the end of that hour (exact: NUMERIC sums). Fills after the last candle hour are not in the
-- hourly calendar yet and are left out on purpose. The full outer join also catches a traded symbol missing
-- from positions_hourly, or a position with no fill. Fails with every mismatch.
with last_positions as (
    select account_id, symbol, hour, quantity
    from (
        select
            account_id, symbol, hour, quantity,
            row_number() over (partition by account_id, symbol order by hour desc) as from_end
        from {{ ref('positions_hourly') }}
    ) as ranked
    where from_end = 1
),

fill_totals as (
    select f.account_id, f.symbol, sum(f.signed_quantity) as quantity
    from {{ ref('fct_fills') }} as f
    where f.filled_at < (select max(hour) from {{ ref('positions_hourly') }}) + interval '1 hour'
    group by f.account_id, f.symbol
)

select
    coalesce(p.account_id, f.account_id) as account_id,
    coalesce(p.symbol, f.symbol) as symbol,
    p.hour,
    p.quantity as position_quantity,
    f.quantity as fills_quantity
from last_positions as p
full outer join fill_totals as f on f.account_id = p.account_id and f.symbol = p.symbol
where p.quantity is null or f.quantity is null or p.quantity <> f.quantity
