-- One row per account and UTC hour, from the hour of the account's first capital flow or fill to the last
-- candle hour (the last hour the book can be marked). `hour` is the hour's start; the hourly figures are the
-- state at its end. Fills and flows after the last candle hour wait for the next build.
-- Incremental: the hours from recompute_from_hour() on. Earlier rows cannot change: an account's first hour
-- only moves to a new fill or flow, and every new one is at or after that hour.
{{ config(
    materialized='incremental', incremental_strategy='delete+insert', unique_key='hour',
    meta={'changed_rows': {'column': 'hour', 'since': 'hour'}},
) }}

with {% if is_incremental() %}recompute as (
    select {{ recompute_from_hour() }} as from_hour
),

{% endif %}first_events as (
    select account_id, min(flow_at) as first_at
    from {{ ref('stg_capital_flows') }}
    group by account_id
    union all
    select account_id, min(filled_at)
    from {{ ref('int_fills_quote_fee') }}
    group by account_id
),

bounds as (
    select
        e.account_id,
        {{ date_trunc_hour('min(e.first_at)') }} as first_hour
    from first_events as e
    group by e.account_id
),

last_candle_hour as (
    select {{ candle_mark_hour('max(close_time)') }} as last_hour from {{ ref('stg_market_candles') }}
),

spans as (
    select
        b.account_id,
        {% if is_incremental() %}greatest(b.first_hour, r.from_hour){% else %}b.first_hour{% endif %} as first_hour,
        l.last_hour
    from bounds as b
    cross join last_candle_hour as l
    {% if is_incremental() %}cross join recompute as r
    where r.from_hour <= l.last_hour{% endif %}
)

select a.account_id, a.user_id, a.exchange, hours.hour
from spans as s
{{ cross_join_hours('s.first_hour', 's.last_hour', 'hours', 'hour') }}
inner join {{ ref('stg_accounts') }} as a on a.account_id = s.account_id
