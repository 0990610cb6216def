-- The mark of each (exchange, symbol) at the END of each UTC hour: the close of the last candle whose close
-- is known at or before hour + 1h (a candle closes at open_time + interval, so the 1m candle opened at 10:59
-- and the 1h candle opened at 10:00 both mark hour 10:00). Hours without a new candle keep the previous mark.
-- `hour` labels the hour by its start, as everywhere in the hourly models. `priced_at` is the close time used.
-- Only traded symbols and the <coin><cash asset> symbols of coins moved by capital flows are marked (the
-- collectors may store many more); every series runs to the last candle hour of all candles, the end of the
-- account calendars.
with candles as (
    select
        exchange,
        symbol,
        close,
        close_time,
        interval_seconds,
        {{ candle_mark_hour('close_time') }} as hour
    from {{ ref('stg_market_candles') }}
    where symbol in (select symbol from {{ ref('int_fills_quote_fee') }})
        {%- for asset in var('cash_assets') %}
        or symbol in (select asset || '{{ asset }}' from {{ ref('stg_capital_flows') }})
        {%- endfor %}
),

last_close_in_hour as (
    select exchange, symbol, hour, close, close_time
    from (
        select
            *,
            row_number() over (
                partition by exchange, symbol, hour order by close_time desc, interval_seconds
            ) as recency_rank
        from candles
    ) as ranked
    where recency_rank = 1
),

bounds as (
    select exchange, symbol, min(hour) as first_hour
    from last_close_in_hour
    group by exchange, symbol
),

last_candle_hour as (
    select {{ candle_mark_hour('max(close_time)') }} as last_hour from {{ ref('stg_market_candles') }}
),

calendar as (
    select b.exchange, b.symbol, hours.hour
    from bounds as b
    cross join last_candle_hour as l
    {{ cross_join_hours('b.first_hour', 'l.last_hour', 'hours', 'hour') }}
),

grouped as (
    -- Forward fill without IGNORE NULLS (PostgreSQL has none): each candle hour opens a group that the
    -- following empty hours join.
    select
        c.exchange,
        c.symbol,
        c.hour,
        l.close,
        l.close_time,
        count(l.close) over (
            partition by c.exchange, c.symbol order by c.hour rows between unbounded preceding and current row
        ) as mark_group
    from calendar as c
    left join last_close_in_hour as l
        on l.exchange = c.exchange and l.symbol = c.symbol and l.hour = c.hour
)

select
    exchange,
    symbol,
    hour,
    max(close) over (partition by exchange, symbol, mark_group) as mark_price,
    max(close_time) over (partition by exchange, symbol, mark_group) as priced_at
from grouped
