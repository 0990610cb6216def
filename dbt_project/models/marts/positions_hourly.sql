-- Each account's position in each symbol at the end of each hour (`hour` = the hour's start), marked to the
-- last candle close known at the hour's end. The mark comes from the account's own exchange, else from the
-- most recent close of any exchange (a simulator account trades on replayed Binance candles). A position
-- without any mark keeps a NULL mark_price (reported by the open_positions_are_marked test); a flat one is
-- worth 0. Incremental: the hours from recompute_from_hour() on.
{{ config(
    materialized='incremental', incremental_strategy='delete+insert', unique_key='hour',
    meta={'changed_rows': {'column': 'hour', 'since': 'hour'}},
) }}

with marks_by_symbol as (
    select symbol, hour, mark_price
    from (
        select
            symbol,
            hour,
            mark_price,
            row_number() over (partition by symbol, hour order by priced_at desc, exchange) as recency_rank
        from {{ ref('int_marks_hourly') }}
    ) as ranked
    where recency_rank = 1
),

marked as (
    select
        p.hour,
        p.account_id,
        p.user_id,
        p.symbol,
        p.quantity,
        coalesce(own.mark_price, any_exchange.mark_price) as mark_price
    from {{ ref('int_positions_hourly') }} as p
    left join {{ ref('int_marks_hourly') }} as own
        on own.exchange = p.exchange and own.symbol = p.symbol and own.hour = p.hour
    left join marks_by_symbol as any_exchange
        on any_exchange.symbol = p.symbol and any_exchange.hour = p.hour
    {% if is_incremental() %}where p.hour >= {{ recompute_from_hour() }}{% endif %}
)

select
    hour,
    account_id,
    user_id,
    symbol,
    quantity,
    mark_price,
    case when quantity = 0 then cast(0 as numeric(38, 18)) else {{ money_multiply('quantity', 'mark_price') }} end
        as market_value
from marked
