-- One row per account and UTC hour, from the hour of the account's first capital flow or fill to the last
-- candle hour (the last hour the book can be marked). `hour` is the hour's start; the hourly figures are the
-- state at its end. Fills and flows after the last candle hour wait for the next build.
with first_events as (
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
)

select a.account_id, a.user_id, a.exchange, hours.hour
from bounds as b
cross join last_candle_hour as l
{{ cross_join_hours('b.first_hour', 'l.last_hour', 'hours', 'hour') }}
inner join {{ ref('stg_accounts') }} as a on a.account_id = b.account_id
