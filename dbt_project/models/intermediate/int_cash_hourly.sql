-- Quote cash of each account at the end of each hour: cumulative capital flows in a cash asset (var('cash_assets'),
-- at par) plus cumulative fill cash flows (- buy cost, + sell proceeds, - fees). `net_flows` are the cash capital
-- flows within the hour; a flow in a coin (a BTC deposit) is held in int_coins_hourly instead.
-- Incremental: recomputes the hours from recompute_from_hour() on, from the cash of the hour before.
{{ config(
    materialized='incremental', incremental_strategy='delete+insert', unique_key='hour',
    meta={'changed_rows': {'column': 'hour', 'since': 'hour'}},
) }}

with {% if is_incremental() %}bounds as (
    select {{ recompute_from_hour() }} as from_hour
),

opening as (
    select t.account_id, t.cash
    from {{ this }} as t
    where t.hour = (select from_hour from bounds) - interval '1 hour'
),

{% endif %}flows_by_hour as (
    select account_id, {{ date_trunc_hour('flow_at') }} as hour, sum(amount) as net_flows
    from {{ ref('stg_capital_flows') }}
    where asset in ({% for asset in var('cash_assets') %}'{{ asset }}'{% if not loop.last %}, {% endif %}{% endfor %})
    {% if is_incremental() %}and flow_at >= (select from_hour from bounds){% endif %}
    group by account_id, {{ date_trunc_hour('flow_at') }}
),

fill_cash_by_hour as (
    select account_id, {{ date_trunc_hour('filled_at') }} as hour, sum(cash_flow) as fill_cash_flow
    from {{ ref('int_fills_quote_fee') }}
    {% if is_incremental() %}where filled_at >= (select from_hour from bounds){% endif %}
    group by account_id, {{ date_trunc_hour('filled_at') }}
),

hourly as (
    select
        c.hour,
        c.account_id,
        c.user_id,
        coalesce(fl.net_flows, 0) as net_flows,
        coalesce(fc.fill_cash_flow, 0) as fill_cash_flow
    from {{ ref('int_account_calendar') }} as c
    left join flows_by_hour as fl on fl.account_id = c.account_id and fl.hour = c.hour
    left join fill_cash_by_hour as fc on fc.account_id = c.account_id and fc.hour = c.hour
    {% if is_incremental() %}where c.hour >= (select from_hour from bounds){% endif %}
)

select
    h.hour,
    h.account_id,
    h.user_id,
    h.net_flows,
    h.fill_cash_flow,
    {% if is_incremental() %}coalesce(o.cash, 0) + {% endif %}sum(h.net_flows + h.fill_cash_flow) over (
        partition by h.account_id order by h.hour rows between unbounded preceding and current row
    ) as cash
from hourly as h
{% if is_incremental() %}left join opening as o on o.account_id = h.account_id{% endif %}
