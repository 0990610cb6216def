-- Fills with their fee, notional and cash flow in the quote asset, and the strategy of their order.
-- fee_quote: a fee in the quote asset (or with no asset, as the realtime tier records it) as is; a fee in the
-- base asset (symbol minus its quote suffix) valued at the fill price; a fee in a third asset (BNB) valued at
-- the last close of <fee asset><quote asset> known at the fill (NULL if no such candle: the not_null test
-- on fee_quote reports it rather than dropping the fee).
-- Incremental: the fills of the raw partitions extracted since the last build (macros/incremental.sql).
{{ config(
    materialized='incremental', incremental_strategy='delete+insert', unique_key='fill_id',
    meta={'changed_rows': {'column': 'created_at', 'since': 'fills'}},
) }}

with fills as (
    select
        f.*,
        {{ quote_asset('f.symbol') }} as quote_asset
    from {{ ref('stg_fills') }} as f
    {% if is_incremental() %}where f.created_at >= {{ changed_since('fills') }}{% endif %}
),

assets as (
    select
        *,
        {{ base_asset('symbol', 'quote_asset') }} as base_asset
    from fills
),

third_asset_fee_prices as (
    select fill_id, fee_asset_price
    from (
        select
            a.fill_id,
            c.close as fee_asset_price,
            row_number() over (
                partition by a.fill_id
                order by c.close_time desc, case when c.exchange = a.exchange then 0 else 1 end, c.interval_seconds
            ) as recency_rank
        from assets as a
        inner join {{ ref('stg_market_candles') }} as c
            on c.symbol = a.fee_asset || a.quote_asset
            and c.close_time <= a.filled_at
        where a.fee <> 0
            and a.fee_asset is not null
            and a.fee_asset <> a.quote_asset
            and a.fee_asset <> a.base_asset
    ) as ranked
    where recency_rank = 1
),

valued as (
    select
        a.fill_id,
        a.order_id,
        a.account_id,
        a.user_id,
        o.strategy_id,
        a.exchange,
        a.symbol,
        a.base_asset,
        a.quote_asset,
        a.side,
        a.trade_id,
        a.quantity,
        a.price,
        a.fee,
        a.fee_asset,
        a.filled_at,
        a.created_at,
        {{ money_multiply('a.quantity', 'a.price') }} as notional,
        case
            when a.fee = 0 then cast(0 as numeric(38, 18))
            when a.fee_asset is null or a.fee_asset = a.quote_asset then a.fee
            when a.fee_asset = a.base_asset then {{ money_multiply('a.fee', 'a.price') }}
            else {{ money_multiply('a.fee', 'p.fee_asset_price') }}
        end as fee_quote,
        case when a.side = 'buy' then a.quantity else -a.quantity end as signed_quantity
    from assets as a
    left join {{ ref('stg_orders') }} as o on o.order_id = a.order_id
    left join third_asset_fee_prices as p on p.fill_id = a.fill_id
)

select
    *,
    (case when side = 'buy' then -notional else notional end) - fee_quote as cash_flow
from valued
