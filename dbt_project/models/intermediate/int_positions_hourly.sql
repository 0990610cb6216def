-- Cumulative signed quantity of each account and symbol at the end of each hour of the account calendar,
-- from the hour of the account's first fill in that symbol (a closed position stays, at quantity 0).
-- Incremental: recomputes the hours from recompute_from_hour() on, from the quantity of the hour before.
{{ config(
    materialized='incremental', incremental_strategy='delete+insert', unique_key='hour',
    meta={'changed_rows': {'column': 'hour', 'since': 'hour'}},
) }}

with {% if is_incremental() %}bounds as (
    select {{ recompute_from_hour() }} as from_hour
),

opening as (
    select t.account_id, t.symbol, t.quantity
    from {{ this }} as t
    where t.hour = (select from_hour from bounds) - interval '1 hour'
),

{% endif %}fills_by_hour as (
    select
        account_id,
        symbol,
        {{ date_trunc_hour('filled_at') }} as hour,
        sum(signed_quantity) as quantity_change
    from {{ ref('int_fills_quote_fee') }}
    {% if is_incremental() %}where filled_at >= (select from_hour from bounds){% endif %}
    group by account_id, symbol, {{ date_trunc_hour('filled_at') }}
),

{#- The books and the hour each starts: incrementally, those already open at the hour before (they have a row
    in every hour since their first fill) and those whose first fill is in the recomputed hours. #}
traded_symbols as (
    select account_id, symbol, min(hour) as first_hour
    from (
        select account_id, symbol, hour
        from fills_by_hour
        {% if is_incremental() %}
        union all
        select account_id, symbol, (select from_hour from bounds)
        from opening
        {% endif %}
    ) as books
    group by account_id, symbol
),

grid as (
    select c.hour, c.account_id, c.user_id, c.exchange, s.symbol
    from {{ ref('int_account_calendar') }} as c
    inner join traded_symbols as s
        on s.account_id = c.account_id and c.hour >= s.first_hour
    {% if is_incremental() %}where c.hour >= (select from_hour from bounds){% endif %}
)

select
    g.hour,
    g.account_id,
    g.user_id,
    g.exchange,
    g.symbol,
    {% if is_incremental() %}coalesce(o.quantity, 0) + {% endif %}sum(coalesce(f.quantity_change, 0)) over (
        partition by g.account_id, g.symbol order by g.hour rows between unbounded preceding and current row
    ) as quantity
from grid as g
left join fills_by_hour as f
    on f.account_id = g.account_id and f.symbol = g.symbol and f.hour = g.hour
{% if is_incremental() %}left join opening as o on o.account_id = g.account_id and o.symbol = g.symbol{% endif %}
