-- NAV of every scope at the end of every hour (`hour` = the hour's start): NAV = cash + positions_value,
-- cash = capital flows + fill cash flows, positions marked to the last close; net_flows are the capital
-- flows within the hour; return = (nav - net_flows) / previous nav - 1 (NULL when the previous NAV is not
-- positive, e.g. the scope's first hour). Scopes aggregate accounts through int_scope_accounts.
with positions_value as (
    select account_id, hour, sum(market_value) as positions_value
    from {{ ref('positions_hourly') }}
    group by account_id, hour
),

accounts as (
    select
        c.hour,
        c.account_id,
        c.cash,
        coalesce(p.positions_value, 0) as positions_value,
        c.net_flows
    from {{ ref('int_cash_hourly') }} as c
    left join positions_value as p on p.account_id = c.account_id and p.hour = c.hour
),

scoped as (
    select
        a.hour,
        s.scope,
        s.scope_id,
        sum({{ apply_weight('a.cash', 's.weight') }}) as cash,
        sum({{ apply_weight('a.positions_value', 's.weight') }}) as positions_value,
        sum({{ apply_weight('a.net_flows', 's.weight') }}) as net_flows
    from accounts as a
    inner join {{ ref('int_scope_accounts') }} as s on s.account_id = a.account_id
    group by a.hour, s.scope, s.scope_id
),

navs as (
    select hour, scope, scope_id, cash, positions_value, cash + positions_value as nav, net_flows
    from scoped
)

select
    hour,
    scope,
    scope_id,
    cash,
    positions_value,
    nav,
    net_flows,
    {{ period_return('nav', 'net_flows', 'lag(nav) over (partition by scope, scope_id order by hour)') }}
        as "return"
from navs
