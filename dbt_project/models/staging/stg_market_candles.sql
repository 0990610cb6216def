-- Candles, one row per (exchange, symbol, interval, open_time), with the instant the close is known
-- (`close_time` = open_time + interval). Upserts of a still-open candle can leave two versions: the later one
-- has traded at least as much, so the larger volume wins.
with typed as (
    select
        lower(cast(exchange as varchar)) as exchange,
        upper(cast(symbol as varchar)) as symbol,
        cast("interval" as varchar) as candle_interval,
        {{ interval_seconds('cast("interval" as varchar)') }} as interval_seconds,
        cast(open_time as timestamp with time zone) as open_time,
        cast(open as numeric(38, 18)) as open,
        cast(high as numeric(38, 18)) as high,
        cast(low as numeric(38, 18)) as low,
        cast(close as numeric(38, 18)) as close,
        cast(volume as numeric(38, 18)) as volume
    from {{ source('raw', 'market_candles') }}
),

ranked as (
    select
        *,
        row_number() over (
            partition by exchange, symbol, candle_interval, open_time order by volume desc
        ) as version_rank
    from typed
)

select
    exchange, symbol, candle_interval, interval_seconds, open_time,
    open_time + interval_seconds * interval '1 second' as close_time,
    open, high, low, close, volume
from ranked
where version_rank = 1
