-- Coins each account holds from capital flows (a BTC or ETH deposit, a withdrawal), per asset at the end of each
-- hour of the account calendar, from the hour of the account's first flow in that asset, marked to the last
-- close of <asset><cash asset> (the first of var('cash_assets') with a candle; the account's own exchange, else
-- the most recent close of any exchange, as positions are marked). Flows in a cash asset are cash
-- (int_cash_hourly); coins bought or sold by fills are positions (int_positions_hourly): on a spot venue the two
-- add up to the balance, and neither is counted twice. `net_quantity` is the flow within the hour and
-- `net_flow_value` its value at the hour's mark (the capital it brought, for returns). A coin without any mark
-- keeps a NULL mark_price (reported by the coins_are_marked test), never a value of 0.
-- Incremental: recomputes the hours from recompute_from_hour() on, from the quantity of the hour before.
{{ config(
    materialized='incremental', incremental_strategy='delete+insert', unique_key='hour',
    meta={'changed_rows': {'column': 'hour', 'since': 'hour'}},
) }}

{%- set cash_assets = var('cash_assets') %}

with {% if is_incremental() %}bounds as (
    select {{ recompute_from_hour() }} as from_hour
),

opening as (
    select t.account_id, t.asset, t.quantity
    from {{ this }} as t
    where t.hour = (select from_hour from bounds) - interval '1 hour'
),

{% endif %}flows_by_hour as (
    select account_id, asset, {{ date_trunc_hour('flow_at') }} as hour, sum(amount) as net_quantity
    from {{ ref('stg_capital_flows') }}
    where asset not in ({% for asset in cash_assets %}'{{ asset }}'{% if not loop.last %}, {% endif %}{% endfor %})
    {% if is_incremental() %}and flow_at >= (select from_hour from bounds){% endif %}
    group by account_id, asset, {{ date_trunc_hour('flow_at') }}
),

{#- The coins and the hour each starts: incrementally, those already held at the hour before (they have a row
    in every hour since their first flow) and those whose first flow is in the recomputed hours. #}
coins as (
    select account_id, asset, min(hour) as first_hour
    from (
        select account_id, asset, hour
        from flows_by_hour
        {% if is_incremental() %}
        union all
        select account_id, asset, (select from_hour from bounds)
        from opening
        {% endif %}
    ) as held_coins
    group by account_id, asset
),

grid as (
    select c.hour, c.account_id, c.user_id, c.exchange, s.asset
    from {{ ref('int_account_calendar') }} as c
    inner join coins as s
        on s.account_id = c.account_id and c.hour >= s.first_hour
    {% if is_incremental() %}where c.hour >= (select from_hour from bounds){% endif %}
),

held as (
    select
        g.hour,
        g.account_id,
        g.user_id,
        g.exchange,
        g.asset,
        coalesce(f.net_quantity, 0) as net_quantity,
        {% if is_incremental() %}coalesce(o.quantity, 0) + {% endif %}sum(coalesce(f.net_quantity, 0)) over (
            partition by g.account_id, g.asset order by g.hour rows between unbounded preceding and current row
        ) as quantity
    from grid as g
    left join flows_by_hour as f
        on f.account_id = g.account_id and f.asset = g.asset and f.hour = g.hour
    {% if is_incremental() %}left join opening as o on o.account_id = g.account_id and o.asset = g.asset{% endif %}
),

marks as (
    select exchange, symbol, hour, mark_price, priced_at
    from {{ ref('int_marks_hourly') }}
    {% if is_incremental() %}where hour >= (select from_hour from bounds){% endif %}
),

marks_by_symbol as (
    select symbol, hour, mark_price
    from (
        select
            symbol,
            hour,
            mark_price,
            row_number() over (partition by symbol, hour order by priced_at desc, exchange) as recency_rank
        from marks
    ) as ranked
    where recency_rank = 1
),

marked as (
    select
        h.*,
        coalesce(
            {%- for asset in cash_assets %}
            own_{{ loop.index }}.mark_price, any_{{ loop.index }}.mark_price{% if not loop.last %},{% endif %}
            {%- endfor %}
        ) as mark_price
    from held as h
    {%- for asset in cash_assets %}
    left join marks as own_{{ loop.index }}
        on own_{{ loop.index }}.exchange = h.exchange
        and own_{{ loop.index }}.symbol = h.asset || '{{ asset }}'
        and own_{{ loop.index }}.hour = h.hour
    left join marks_by_symbol as any_{{ loop.index }}
        on any_{{ loop.index }}.symbol = h.asset || '{{ asset }}' and any_{{ loop.index }}.hour = h.hour
    {%- endfor %}
)

select
    hour,
    account_id,
    user_id,
    asset,
    net_quantity,
    quantity,
    mark_price,
    case when quantity = 0 then cast(0 as numeric(38, 18)) else {{ money_multiply('quantity', 'mark_price') }} end
        as market_value,
    case when net_quantity = 0 then cast(0 as numeric(38, 18))
        else {{ money_multiply('net_quantity', 'mark_price') }} end as net_flow_value
from marked
