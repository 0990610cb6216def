-- Current exposure of every scope per exchange and symbol: the open positions of the last hour, weighted
-- like NAV. gross = sum of |market value| over the scope's accounts, net = signed sum, share_of_gross = this
-- line's gross / the scope's total gross. Flat positions have no row.
with last_hour_positions as (
    select p.account_id, a.exchange, p.symbol, p.market_value
    from {{ ref('positions_hourly') }} as p
    inner join {{ ref('stg_accounts') }} as a on a.account_id = p.account_id
    where p.hour = (select max(hour) from {{ ref('positions_hourly') }})
        and p.quantity <> 0
),

scoped as (
    select
        s.scope,
        s.scope_id,
        p.exchange,
        p.symbol,
        sum(abs({{ apply_weight('p.market_value', 's.weight') }})) as gross,
        sum({{ apply_weight('p.market_value', 's.weight') }}) as net
    from last_hour_positions as p
    inner join {{ ref('int_scope_accounts') }} as s on s.account_id = p.account_id
    group by s.scope, s.scope_id, p.exchange, p.symbol
)

select
    scope,
    scope_id,
    exchange,
    symbol,
    gross,
    net,
    cast(gross as double precision)
        / nullif(cast(sum(gross) over (partition by scope, scope_id) as double precision), 0) as share_of_gross
from scoped
