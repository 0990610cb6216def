-- NAV of every scope at the end of every hour (`hour` = the hour's start): NAV = cash + positions_value, every
-- asset held at its mark. cash = capital flows in cash assets + fill cash flows; positions_value = the coins held,
-- marked to the last close: the positions built from fills (positions_hourly) plus the coins moved by capital
-- flows (int_coins_hourly: a BTC deposit), which on a spot venue add up to the balances. net_flows are the
-- capital flows within the hour, a coin's at the hour's mark; return = (nav - net_flows) / previous nav - 1
-- (NULL when the previous NAV is not positive, e.g. the scope's first hour). Scopes aggregate accounts through
-- int_scope_accounts.
-- Incremental: the hours from recompute_from_hour() on; the first of them returns on the stored NAV before.
-- Scope weights are today's: a changed strategy allocation restates history on the next --full-refresh.
{{ config(
    materialized='incremental', incremental_strategy='delete+insert', unique_key='hour',
    meta={'changed_rows': {'column': 'hour', 'since': 'hour'}},
) }}

with {% if is_incremental() %}bounds as (
    select {{ recompute_from_hour() }} as from_hour
),

{% endif %}positions_value as (
    select account_id, hour, sum(market_value) as positions_value
    from {{ ref('positions_hourly') }}
    {% if is_incremental() %}where hour >= (select from_hour from bounds){% endif %}
    group by account_id, hour
),

coins_value as (
    select account_id, hour, sum(market_value) as coins_value, sum(net_flow_value) as coin_flows
    from {{ ref('int_coins_hourly') }}
    {% if is_incremental() %}where hour >= (select from_hour from bounds){% endif %}
    group by account_id, hour
),

accounts as (
    select
        c.hour,
        c.account_id,
        c.cash,
        coalesce(p.positions_value, 0) + coalesce(k.coins_value, 0) as positions_value,
        c.net_flows + coalesce(k.coin_flows, 0) as net_flows
    from {{ ref('int_cash_hourly') }} as c
    left join positions_value as p on p.account_id = c.account_id and p.hour = c.hour
    left join coins_value as k on k.account_id = c.account_id and k.hour = c.hour
    {% if is_incremental() %}where c.hour >= (select from_hour from bounds){% endif %}
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
    select hour, scope, scope_id, cash, positions_value, cash + positions_value as nav, net_flows, true as is_new
    from scoped
    {% if is_incremental() %}
    union all
    select hour, scope, scope_id, cash, positions_value, nav, net_flows, false
    from {{ this }}
    where hour = (select from_hour from bounds) - interval '1 hour'
    {% endif %}
),

with_returns as (
    select
        hour,
        scope,
        scope_id,
        cash,
        positions_value,
        nav,
        net_flows,
        is_new,
        {{ period_return('nav', 'net_flows', 'lag(nav) over (partition by scope, scope_id order by hour)') }}
            as period_return
    from navs
)

select hour, scope, scope_id, cash, positions_value, nav, net_flows, period_return as "return"
from with_returns
where is_new
